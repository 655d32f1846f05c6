//! The policy compiled into what the kernel decides with: credential classes
//! as bits, infrastructure names as suffix hashes carrying the classes that
//! count against them and the classes allow rules permit.

use std::collections::HashMap;

use agentwatch_common::{
    hash::{domain_hash, fnv1a},
    maps::HostClass,
};
use anyhow::Result;

use crate::{
    kernel::maps::KernelMaps,
    policy::{HostPattern, Policy},
};

/// An infrastructure name (exact host or suffix) and how it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub provider: String,
    pub host: HostClass,
}

#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// Class ids; index = class bit.
    pub class_ids: Vec<String>,
    /// Index = domain id, as the kernel reports it in alerts.
    pub domains: Vec<Domain>,
    by_name: HashMap<String, u32>,
    /// Hostnames user space resolves itself (exact catalog and allow hosts).
    pub exact_hosts: Vec<String>,
    /// Credential environment variable → classes its non-empty value gives.
    pub env_names: HashMap<String, u64>,
    /// Display names of providers and credential classes, by id.
    provider_names: HashMap<String, String>,
    class_labels: HashMap<String, String>,
}

impl Tables {
    pub fn compile(policy: &Policy) -> Self {
        let mut tables = Tables {
            class_ids: policy
                .classes
                .iter()
                .map(|class| class.id.clone())
                .collect(),
            provider_names: policy
                .providers
                .iter()
                .map(|provider| (provider.id.clone(), provider.name.clone()))
                .collect(),
            class_labels: policy
                .classes
                .iter()
                .map(|class| (class.id.clone(), class.name.clone()))
                .collect(),
            ..Tables::default()
        };
        let against = |provider: &str| -> u64 {
            (0..policy.classes.len())
                .filter(|&class| policy.class_counts_against(class, provider))
                .fold(0, |mask, class| mask | 1 << class)
        };
        for provider in &policy.providers {
            let classes = against(&provider.id);
            for name in provider.hosts.iter().chain(&provider.domains) {
                tables.put(name, &provider.id, classes, 0);
            }
            // An excluded sub-domain is listed with no classes: the kernel
            // takes the longest listed suffix, so it wins over its parent.
            for name in &provider.exclude_domains {
                tables.put(name, &provider.id, 0, 0);
            }
            tables.exact_hosts.extend(provider.hosts.iter().cloned());
        }
        for rule in &policy.allow {
            let permitted = |domain: &Domain| match &rule.credential {
                Some(class) => policy.class_index(class).map_or(0, |bit| 1 << bit),
                None => domain.host.classes,
            };
            let name = match &rule.host {
                HostPattern::Exact(host) => host,
                HostPattern::Suffix(suffix) => suffix,
            };
            // A rule naming a host below a listed domain gets its own, more
            // specific entry.
            if !tables.by_name.contains_key(name)
                && let Some(provider) = policy.provider_of_host(name)
            {
                tables.put(name, &provider.id, against(&provider.id), 0);
                if matches!(rule.host, HostPattern::Exact(_)) {
                    tables.exact_hosts.push(name.to_string());
                }
            }
            for domain in tables
                .domains
                .iter_mut()
                .filter(|d| rule.host.matches(&d.name))
            {
                domain.host.allowed |= permitted(domain);
            }
        }
        for (bit, class) in policy.classes.iter().enumerate() {
            for name in &class.env {
                *tables.env_names.entry(name.clone()).or_default() |= 1 << bit;
            }
        }
        tables
    }

    fn put(&mut self, name: &str, provider: &str, classes: u64, allowed: u64) {
        let next = self.domains.len() as u32;
        let id = *self.by_name.entry(name.to_string()).or_insert(next);
        let domain = Domain {
            name: name.to_string(),
            provider: provider.to_string(),
            host: HostClass {
                classes,
                allowed,
                domain: id,
                ..HostClass::default()
            },
        };
        if id == next {
            self.domains.push(domain);
        } else {
            self.domains[id as usize] = domain;
        }
    }

    /// The domain a name falls under, by the kernel's rule: the longest
    /// listed suffix; `None` when that is an exclusion or nothing matches.
    pub fn lookup(&self, name: &str) -> Option<&Domain> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut suffix = name.as_str();
        loop {
            if let Some(&id) = self.by_name.get(suffix) {
                let domain = &self.domains[id as usize];
                return (domain.host.classes != 0).then_some(domain);
            }
            suffix = suffix.split_once('.')?.1;
        }
    }

    /// A provider's display name ("Railway" for `railway`).
    pub fn provider_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.provider_names.get(id).map_or(id, String::as_str)
    }

    /// A credential class's display name.
    pub fn class_label<'a>(&'a self, id: &'a str) -> &'a str {
        self.class_labels.get(id).map_or(id, String::as_str)
    }

    /// The mask of the classes named (unknown ids are ignored).
    pub fn class_mask(&self, ids: &[String]) -> u64 {
        self.class_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| ids.contains(id))
            .fold(0, |mask, (bit, _)| mask | 1 << bit)
    }

    /// Ids of the classes in `mask`.
    pub fn class_names(&self, mask: u64) -> Vec<String> {
        self.class_ids
            .iter()
            .enumerate()
            .filter(|(bit, _)| mask & (1 << bit) != 0)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Fills the domain and environment-name maps.
    pub fn load_into(&self, maps: &mut KernelMaps) -> Result<()> {
        for domain in &self.domains {
            maps.add_domain(domain_hash(&domain.name), domain.host)?;
        }
        for (name, classes) in &self.env_names {
            maps.add_env_name(fnv1a(name.as_bytes()), *classes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn tables(extra: &str) -> (Policy, Tables) {
        let policy = Policy::from_str_with_path(extra, Path::new("test.toml")).expect("policy");
        let tables = Tables::compile(&policy);
        (policy, tables)
    }

    #[test]
    fn a_credential_counts_against_its_own_providers_hosts_only() {
        let (policy, tables) = tables("");
        let railway = policy.class_index("railway").unwrap();
        let aws = policy.class_index("aws").unwrap();
        let backboard = tables
            .lookup("backboard.railway.app")
            .expect("railway host");
        assert_eq!(backboard.provider, "railway");
        assert_ne!(backboard.host.classes & 1 << railway, 0);
        assert_eq!(
            backboard.host.classes & 1 << aws,
            0,
            "AWS keys do not count against Railway"
        );
        let s3 = tables
            .lookup("S3.us-east-1.AMAZONAWS.com.")
            .expect("aws suffix");
        assert_ne!(s3.host.classes & 1 << aws, 0);
        // Credentials of unknown provenance count against everyone.
        let workspace = policy.class_index("workspace").unwrap();
        assert_ne!(backboard.host.classes & 1 << workspace, 0);
        assert_ne!(s3.host.classes & 1 << workspace, 0);
    }

    #[test]
    fn unrelated_and_user_app_names_are_not_infrastructure() {
        let (_, tables) = tables("");
        for name in [
            "github.com",
            "registry.npmjs.org",
            "myapp.up.railway.app",
            "localhost",
        ] {
            assert!(tables.lookup(name).is_none(), "{name}");
        }
    }

    #[test]
    fn strict_makes_every_credential_count_everywhere() {
        let (_, tables) = tables("strict = true\n");
        let backboard = tables.lookup("backboard.railway.app").unwrap();
        let all = (0..tables.class_ids.len()).fold(0, |mask, bit| mask | 1 << bit);
        assert_eq!(backboard.host.classes, all);
    }

    #[test]
    fn allow_rules_permit_a_class_for_a_host() {
        let (policy, tables) = tables(
            "[[allow]]\nhost = \"api.github.com\"\ncredential = \"github\"\n\
             [[allow]]\nhost = \"s3.amazonaws.com\"\n",
        );
        let github = policy.class_index("github").unwrap();
        let api = tables.lookup("api.github.com").unwrap();
        assert_eq!(api.host.allowed, 1 << github);
        // A host under a listed suffix gets its own entry, allowing every
        // class that counts against it, without loosening the suffix.
        let s3 = tables.lookup("s3.amazonaws.com").unwrap();
        assert_eq!(s3.host.allowed, s3.host.classes);
        assert!(tables.exact_hosts.iter().any(|h| h == "s3.amazonaws.com"));
        let ec2 = tables.lookup("ec2.amazonaws.com").unwrap();
        assert_eq!(ec2.host.allowed, 0);
    }

    #[test]
    fn environment_names_map_to_their_class() {
        let (policy, tables) = tables("");
        let railway = policy.class_index("railway").unwrap();
        assert_eq!(tables.env_names["RAILWAY_TOKEN"], 1 << railway);
        assert_eq!(tables.class_names(1 << railway), ["railway"]);
    }
}
