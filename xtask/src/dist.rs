//! `cargo xtask dist`: the Debian package. The binary (the kernel programs
//! are embedded in it), the unit, the policy, and the completions and man
//! pages the binary writes from its own CLI, packaged by cargo-deb as
//! agentwatch's `[package.metadata.deb]` lists them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{binary, cargo, run};

/// Where the packages land.
fn dist_dir(root: &Path) -> PathBuf {
    root.join("target/dist")
}

/// Each shell's completion script, by the file name its directory expects.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "agentwatch.bash"),
    ("zsh", "_agentwatch"),
    ("fish", "agentwatch.fish"),
];

/// Packages the agentwatch binary built (release or debug); returns the
/// package's path. The release one goes in target/dist; the debug one (the
/// default test suite's, quick to build, lightly compressed) in
/// target/dist/debug.
pub fn package(root: &Path, release: bool) -> Result<PathBuf> {
    let binary = binary(root, release);
    // Beside the binary, where the metadata's assets find them
    // (`target/release/dist/...`: cargo-deb reads `target/release` as the
    // profile's directory).
    let generated = binary.with_file_name("dist");
    let completions = generated.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, file) in COMPLETIONS {
        let script = fs::File::create(completions.join(file))?;
        run(Command::new(&binary)
            .args(["completions", shell])
            .stdout(script))?;
    }
    // Pages of commands that no longer exist must not be packaged.
    let man = generated.join("man");
    if man.exists() {
        fs::remove_dir_all(&man).with_context(|| format!("removing {}", man.display()))?;
    }
    run(Command::new(&binary).arg("man").arg(&man))?;
    // Compressed as Debian policy wants them (cargo-deb leaves files from
    // the target directory as they are).
    run(Command::new("sh")
        .arg("-c")
        .arg("gzip --best --no-name \"$0\"/*.1")
        .arg(&man))?;

    let output = if release {
        dist_dir(root)
    } else {
        dist_dir(root).join("debug")
    };
    fs::create_dir_all(&output)?;
    let mut deb = cargo(root);
    deb.args(["deb", "--package", "agentwatch", "--no-build", "--output"])
        .arg(&output);
    if !release {
        deb.args(["--profile", "dev", "--strip", "--fast"]);
    }
    let out = deb
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {deb:?}"))?;
    if !out.status.success() {
        bail!("{deb:?} failed: {}", out.status);
    }
    // cargo-deb prints the package's path.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let package = stdout
        .lines()
        .last()
        .map(PathBuf::from)
        .filter(|path| path.is_file())
        .with_context(|| format!("no package path in cargo-deb's output: {stdout}"))?;
    eprintln!("dist: {}", package.display());
    Ok(package)
}
