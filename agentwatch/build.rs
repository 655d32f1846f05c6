//! Builds the kernel programs (agentwatch-ebpf) for the BPF target and leaves
//! the object in OUT_DIR, where src/probes embeds it.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Where `cargo xtask setup` installs bpf-linker; mirrored in xtask.
fn toolchain_bin() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("AGENTWATCH_TOOLCHAIN_DIR") {
        return Some(PathBuf::from(dir).join("bin"));
    }
    env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".local/share/agentwatch/toolchain/bin"))
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AGENTWATCH_TOOLCHAIN_DIR");
    // Let the nested eBPF build find bpf-linker where setup put it.
    if let Some(bin) = toolchain_bin().filter(|bin| bin.join("bpf-linker").is_file()) {
        let path = env::var_os("PATH").unwrap_or_default();
        let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)))?;
        // SAFETY: build scripts are single-threaded.
        unsafe { env::set_var("PATH", joined) };
    } else if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker not found: run `cargo xtask setup` (it builds bpf-linker against the nightly's LLVM)"
        ));
    }

    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == "agentwatch-ebpf")
        .ok_or_else(|| anyhow!("agentwatch-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

fn which_bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| candidate.is_file())
}
