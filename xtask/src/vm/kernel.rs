//! Debian kernel packages for the VM lane. They come through a private apt
//! configuration (its own sources, lists and cache; the machine's /etc/apt is
//! only read, to learn which mirror it uses) and are unpacked into a cache
//! keyed by package version, so a second run downloads nothing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// The suites that carry the kernels the lane boots: 5.10 and 6.1 from the
/// security archive, 6.12 and newer from backports.
const SECURITY_SUITES: &[&str] = &["bullseye-security", "bookworm-security"];
const BACKPORTS_SUITES: &[&str] = &["bookworm-backports", "trixie-backports"];
/// Debian release names, to tell a machine's Debian sources from others (a
/// vendor repository, Ubuntu).
const CODENAMES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Package lists younger than this are used as they are (no network).
const LISTS_FRESH_FOR: Duration = Duration::from_secs(24 * 3600);

/// One kernel, unpacked.
pub struct Kernel {
    pub package: String,
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/RELEASE`, with a `modules.dep`.
    pub modules: PathBuf,
}

pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("agentwatch/vm")
}

/// The newest packaged kernel of `series` ("6.1"), downloaded and unpacked
/// unless the cache has it.
pub fn fetch(series: &str) -> Result<Kernel> {
    let apt = Apt::new(&cache_dir().join("apt"))?;
    apt.update_if_stale()?;
    let image = apt.newest_image(series)?;
    let dir = cache_dir()
        .join("kernels")
        .join(format!("{}_{}", image.package, image.version));
    let done = dir.join(".complete");
    if !done.exists() {
        unpack(&apt, &image, &dir)?;
        fs::write(&done, "")?;
    }
    locate(&dir, &image)
}

struct Apt {
    dir: PathBuf,
}

/// A `Package:` record from `apt-cache show`, the fields the lane needs.
struct Record {
    package: String,
    version: String,
    depends: String,
}

impl Apt {
    fn new(dir: &Path) -> Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let (debian, security) = machine_mirrors()?;
        let signed_by = if Path::new(KEYRING).exists() {
            format!("[signed-by={KEYRING}] ")
        } else {
            String::new()
        };
        let mut sources = String::new();
        for (uri, suites) in [(&security, SECURITY_SUITES), (&debian, BACKPORTS_SUITES)] {
            for suite in suites {
                sources.push_str(&format!("deb {signed_by}{uri} {suite} main\n"));
            }
        }
        let path = dir.join("sources.list");
        if fs::read_to_string(&path).ok().as_deref() != Some(sources.as_str()) {
            fs::write(&path, sources)?;
            // New sources: the lists on disk describe the old ones.
            let _ = fs::remove_file(dir.join("lists/.updated"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        for (key, value) in [
            ("Dir::Etc::SourceList", d("sources.list")),
            ("Dir::Etc::SourceParts", d("sources.list.d")),
            ("Dir::State::Lists", d("lists")),
            ("Dir::State::status", d("status")),
            ("Dir::Cache", d("cache")),
            ("APT::Architecture", "amd64".into()),
            ("APT::Architectures", "amd64".into()),
            ("Acquire::Languages", "none".into()),
            // Downloads go into our cache, which the _apt user cannot write.
            ("APT::Sandbox::User", "root".into()),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Whether the archive has a version of `package` to download.
    fn has_candidate(&self, package: &str) -> bool {
        self.command("apt-cache")
            .args(["policy", package])
            .output()
            .is_ok_and(|out| {
                let text = String::from_utf8_lossy(&out.stdout);
                out.status.success()
                    && text.contains("Candidate:")
                    && !text.contains("Candidate: (none)")
            })
    }

    fn update_if_stale(&self) -> Result<()> {
        let stamp = self.dir.join("lists/.updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|meta| meta.modified())
            .is_ok_and(|time| {
                SystemTime::now()
                    .duration_since(time)
                    .is_ok_and(|age| age < LISTS_FRESH_FOR)
            });
        if fresh {
            return Ok(());
        }
        eprintln!("vm: updating the private package lists");
        match run(self.command("apt-get").args(["-qq", "update"])) {
            Ok(()) => Ok(fs::write(stamp, "")?),
            // Offline with lists from an earlier run: the cached kernels still boot.
            Err(error) if stamp.exists() => {
                eprintln!("vm: {error:#}; using the lists of the last update");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn output(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("starting {program}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The newest real (not virtual) generic amd64 image of `series`.
    fn newest_image(&self, series: &str) -> Result<Record> {
        let prefix = format!("linux-image-{series}.");
        let names: Vec<String> = self
            .output("apt-cache", &["pkgnames", &prefix])?
            .lines()
            .filter(|name| is_generic_image(name, &prefix))
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            bail!("no linux-image-{series}.*-amd64 package in the lane's suites");
        }
        // `show` prints the records of real packages and complains about
        // names that only something else provides: the complaints are noise.
        let mut args = vec!["show", "--no-all-versions"];
        args.extend(names.iter().map(String::as_str));
        let mut newest: Option<Record> = None;
        for record in parse_records(&self.output("apt-cache", &args)?) {
            if newest
                .as_ref()
                .is_none_or(|best| version_gt(&record.version, &best.version))
            {
                newest = Some(record);
            }
        }
        newest.with_context(|| format!("none of {names:?} can be downloaded"))
    }
}

/// `linux-image-6.1.0-49-amd64` or its `-unsigned` twin, not the cloud, rt or
/// debug flavours, and not a longer series (`6.12.` when `6.1.` is asked for).
fn is_generic_image(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    rest.starts_with(|c: char| c.is_ascii_digit())
        && (rest.ends_with("-amd64") || rest.ends_with("-amd64-unsigned"))
        && !["-cloud-", "-rt-", "-dbg", "template"]
            .iter()
            .any(|flavour| rest.contains(flavour))
}

fn parse_records(text: &str) -> Vec<Record> {
    text.split("\n\n")
        .filter_map(|paragraph| {
            let field = |key: &str| {
                paragraph
                    .lines()
                    .find_map(|line| line.strip_prefix(key)?.strip_prefix(": "))
                    .map(str::to_string)
            };
            Some(Record {
                package: field("Package")?,
                version: field("Version")?,
                depends: field("Depends").unwrap_or_default(),
            })
        })
        .collect()
}

fn version_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|status| status.success())
}

/// From 7.x the image is a metapackage of `linux-binary-`, `-modules-` and
/// `-base-` packages of the same ABI; older images carry everything.
fn packages_of(image: &Record) -> Vec<(String, String)> {
    let abi = image
        .package
        .trim_start_matches("linux-image-")
        .trim_end_matches("-unsigned");
    let mut packages = vec![(image.package.clone(), image.version.clone())];
    for dependency in image.depends.split([',', '|']) {
        let name = dependency.split_whitespace().next().unwrap_or_default();
        if name.ends_with(&format!("-{abi}")) && name.starts_with("linux-") {
            packages.push((name.to_string(), image.version.clone()));
        }
    }
    packages
}

fn unpack(apt: &Apt, image: &Record, dir: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(dir);
    let debs = dir.with_extension("debs");
    let _ = fs::remove_dir_all(&debs);
    fs::create_dir_all(&debs)?;
    fs::create_dir_all(dir)?;
    let mut packages = packages_of(image);
    // An image may name a companion the archive does not carry (6.18.15's
    // linux-base-*): what apt cannot find is not fetched.
    packages.retain(|(name, _)| *name == image.package || apt.has_candidate(name));
    eprintln!(
        "vm: downloading {}",
        packages
            .iter()
            .map(|(name, version)| format!("{name} {version}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    run(apt
        .command("apt-get")
        .current_dir(&debs)
        .args(["-qq", "download"])
        .args(
            packages
                .iter()
                .map(|(name, version)| format!("{name}={version}")),
        ))?;
    for deb in fs::read_dir(&debs)? {
        run(Command::new("dpkg-deb").arg("-x").arg(deb?.path()).arg(dir))?;
    }
    fs::remove_dir_all(&debs)?;
    // The packages leave modules.dep to depmod in their postinst.
    let (base, release) = modules_root(dir)?;
    if !base
        .join("lib/modules")
        .join(&release)
        .join("modules.dep")
        .exists()
    {
        run(Command::new("depmod").arg("-b").arg(&base).arg(&release))?;
    }
    Ok(())
}

/// The directory holding `lib/modules/RELEASE` (the package root, or its
/// `usr/` for merged-/usr packages) and RELEASE.
fn modules_root(dir: &Path) -> Result<(PathBuf, String)> {
    for base in [dir.to_path_buf(), dir.join("usr")] {
        let Ok(entries) = fs::read_dir(base.join("lib/modules")) else {
            continue;
        };
        if let Some(release) = entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .next()
        {
            return Ok((base, release));
        }
    }
    bail!("no lib/modules/RELEASE in {}", dir.display())
}

fn locate(dir: &Path, image: &Record) -> Result<Kernel> {
    let (base, release) = modules_root(dir)?;
    let modules = base.join("lib/modules").join(&release);
    let vmlinuz = [
        dir.join("boot").join(format!("vmlinuz-{release}")),
        modules.join("vmlinuz"),
    ]
    .into_iter()
    .find(|path| path.exists())
    .with_context(|| format!("no vmlinuz for {release} in {}", dir.display()))?;
    Ok(Kernel {
        package: image.package.clone(),
        version: image.version.clone(),
        vmlinuz,
        modules,
    })
}

/// One `deb` entry of the machine's apt sources: its URI and suites.
struct Source {
    uri: String,
    suites: Vec<String>,
}

/// The machine's Debian mirror and security mirror, from its own apt sources
/// (one-line `.list` and deb822 `.sources` files), so the lane uses whatever
/// mirror or proxy the machine is set up for.
fn machine_mirrors() -> Result<(String, String)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut parts: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        parts.sort();
        files.extend(parts);
    }
    let mut sources = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|ext| ext.to_str()) {
            Some("sources") => sources.extend(parse_deb822(&text)),
            _ if file.file_name().is_some_and(|name| name == "sources.list")
                || file.extension().is_some_and(|ext| ext == "list") =>
            {
                sources.extend(parse_one_line(&text))
            }
            _ => {}
        }
    }
    mirrors_from(&sources)
}

fn mirrors_from(sources: &[Source]) -> Result<(String, String)> {
    let debian_suite =
        |suite: &str| CODENAMES.contains(&suite.split(['-', '/']).next().unwrap_or_default());
    let is_security = |suite: &str| suite.ends_with("-security") || suite.ends_with("/updates");
    let find = |security: bool| {
        sources
            .iter()
            .find(|source| {
                source
                    .suites
                    .iter()
                    .any(|suite| debian_suite(suite) && is_security(suite) == security)
            })
            .map(|source| source.uri.trim_end_matches('/').to_string())
    };
    let debian = find(false)
        .context("no Debian archive in the machine's apt sources (/etc/apt/sources.list*)")?;
    // A machine without a security entry: the archive's sibling, as Debian lays it out.
    let security = find(true).unwrap_or_else(|| format!("{debian}-security"));
    Ok((debian, security))
}

fn parse_one_line(text: &str) -> Vec<Source> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb ")?.trim_start();
            // Options: `[arch=amd64 signed-by=...]`.
            let rest = match rest.strip_prefix('[') {
                Some(options) => options.split_once(']')?.1,
                None => rest,
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_string();
            let suite = words.next()?.to_string();
            Some(Source {
                uri,
                suites: vec![suite],
            })
        })
        .collect()
}

fn parse_deb822(text: &str) -> Vec<Source> {
    let mut sources = Vec::new();
    for paragraph in text.split("\n\n") {
        let field = |key: &str| {
            paragraph.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case(key)
                    .then(|| value.split_whitespace().map(str::to_string).collect())
            })
        };
        let types: Vec<String> = field("Types").unwrap_or_default();
        let enabled = field("Enabled").is_none_or(|value: Vec<String>| value != ["no"]);
        if !enabled || !types.iter().any(|kind| kind == "deb") {
            continue;
        }
        let suites: Vec<String> = field("Suites").unwrap_or_default();
        for uri in field("URIs").unwrap_or_default() {
            sources.push(Source {
                uri,
                suites: suites.clone(),
            });
        }
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_from_either_source_format() {
        let mut sources = parse_one_line(
            "# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n\
             deb http://vendor.example/apt stable-vendor main\n",
        );
        sources.extend(parse_deb822(
            "Types: deb\nURIs: http://mirror.example/sec/\nSuites: bookworm-security\n\
             Components: main\n\nTypes: deb\nEnabled: no\nURIs: http://off.example\n\
             Suites: bookworm\n",
        ));
        let (debian, security) = mirrors_from(&sources).unwrap();
        assert_eq!(debian, "http://mirror.example/debian");
        assert_eq!(security, "http://mirror.example/sec");
    }

    #[test]
    fn only_generic_images_of_the_series() {
        let prefix = "linux-image-6.1.";
        assert!(is_generic_image("linux-image-6.1.0-49-amd64", prefix));
        assert!(is_generic_image(
            "linux-image-6.1.0-0.deb11.52-amd64-unsigned",
            prefix
        ));
        assert!(!is_generic_image("linux-image-6.12.95+deb12-amd64", prefix));
        assert!(!is_generic_image(
            "linux-image-6.1.0-49-cloud-amd64",
            prefix
        ));
        assert!(!is_generic_image("linux-image-6.1.0-49-rt-amd64", prefix));
    }

    #[test]
    fn split_kernels_bring_their_parts() {
        let image = Record {
            package: "linux-image-7.3.4+deb13-amd64".into(),
            version: "7.3.4-1~bpo13+1".into(),
            depends: "dracut | initramfs-tools (>= 0.120+deb8u2), \
                      linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), \
                      linux-binary-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)"
                .into(),
        };
        let names: Vec<String> = packages_of(&image).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "linux-image-7.3.4+deb13-amd64",
                "linux-base-7.3.4+deb13-amd64",
                "linux-binary-7.3.4+deb13-amd64"
            ]
        );
    }
}
