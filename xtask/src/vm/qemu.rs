//! One boot of a kernel under qemu: the host's `/` shared read-only, a
//! writable share for results, the serial console captured to a file, and a
//! deadline after which the VM is killed (a hung kernel fails its lane).

use std::{
    fs::File,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    /// Holds `results/` (mounted writable in the guest, tag `results`),
    /// `console.log` (the serial console: kernel messages, the lane's
    /// output) and `qemu.log` (qemu's own complaints).
    pub dir: &'a Path,
    pub timeout: Duration,
}

pub struct Outcome {
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// "kvm" only with a real KVM module: the /dev/kvm of a nested paravirtual
/// host (kvm_pvm) cannot boot stock kernels ("KVM internal error").
pub fn accel() -> &'static str {
    if ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
        .iter()
        .any(|module| Path::new(module).exists())
    {
        "kvm"
    } else {
        "tcg"
    }
}

pub fn boot(boot: &Boot) -> Result<Outcome> {
    let accel = accel();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-accel", accel])
        .args(["-cpu", if accel == "kvm" { "host" } else { "max" }])
        .args(["-smp", "2", "-m", "4G"])
        .args([
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
            "-nic",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", boot.dir.join("console.log").display()))
        .arg("-kernel")
        .arg(boot.vmlinuz)
        .arg("-initrd")
        .arg(boot.initramfs)
        // panic=-1 with -no-reboot: a kernel panic ends qemu at once.
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/init"])
        // multidevs=remap: the host's / spans several filesystems, whose
        // inode numbers would otherwise collide in the guest.
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=results,security_model=none",
            boot.dir.join("results").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(boot.dir.join("qemu.log"))?);
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(Outcome {
                elapsed: start.elapsed(),
                timed_out: false,
            });
        }
        if start.elapsed() > boot.timeout {
            // The qemu we started, by its pid.
            child.kill()?;
            child.wait()?;
            return Ok(Outcome {
                elapsed: start.elapsed(),
                timed_out: true,
            });
        }
        thread::sleep(Duration::from_millis(200));
    }
}
