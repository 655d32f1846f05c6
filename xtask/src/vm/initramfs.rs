//! The lane's initramfs: a static busybox, the modules virtio-9p needs
//! (decompressed, since busybox insmod reads plain `.ko`), and an init that
//! mounts the host's `/` read-only and runs the lane's script inside it.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::kernel::Kernel;

/// What the guest needs as modules: virtio over PCI and 9p over virtio.
/// Their dependencies (netfs, fscache, virtio_ring, ...) come from modules.dep.
const MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];
const BUSYBOX: &str = "/bin/busybox";
/// Where the results share is mounted in the guest; the lane's script is there.
pub const RESULTS_IN_GUEST: &str = "/run/agentwatch-vm";

const INIT: &str = r#"#!/bin/busybox sh
# The VM lane's init (PID 1 until switch_root).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
halt() { echo "init: $*"; echo o > /proc/sysrq-trigger; sleep 10; }
for m in $(cat /modules.order); do
    insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed"
done
N=/newroot
# cache=loose: the host files the lane reads do not change under it.
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot $N \
    || halt "cannot mount the host root over 9p"
mount -t proc proc $N/proc
mount -t sysfs sysfs $N/sys
mount -t devtmpfs devtmpfs $N/dev
mkdir -p $N/dev/pts $N/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $N/dev/pts
mount -t tmpfs tmpfs $N/dev/shm
# What tests write: temp dirs, HOME, runtime dirs (/run/netns, the daemon's socket).
for d in tmp var/tmp; do mount -t tmpfs -o mode=1777 tmpfs $N/$d; done
for d in run root; do mount -t tmpfs -o mode=0755 tmpfs $N/$d; done
[ -L $N/var/run ] || mount -t tmpfs -o mode=0755 tmpfs $N/var/run
# /etc writable (tests write /etc/netns/NAME/resolv.conf): a tmpfs copy, not
# an overlay, whose st_dev would differ from the device the kernel reports.
mkdir -p /rw && mount -t tmpfs tmpfs /rw
cp -a $N/etc /rw/etc || echo "init: some of /etc was not copied"
mount --bind /rw/etc $N/etc || echo "init: no writable /etc"
mount -t cgroup2 cgroup2 $N/sys/fs/cgroup
mount -t tracefs tracefs $N/sys/kernel/tracing
mkdir -p $N/run/agentwatch-vm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results $N/run/agentwatch-vm \
    || halt "cannot mount the results share"
# Lazily: init's stdio still holds /dev/console.
umount -l /proc /sys /dev
exec switch_root $N /bin/sh /run/agentwatch-vm/guest.sh
"#;

pub fn build(kernel: &Kernel, out: &Path) -> Result<()> {
    let order = module_order(&kernel.modules)?;
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        cpio.entry(dir, 0o040755, 0, &[]);
    }
    // The kernel opens /dev/console for init's stdio before init runs.
    cpio.entry("dev/console", 0o020600, (5 << 8) | 1, &[]);
    let busybox = fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (Debian package busybox-static)"))?;
    cpio.entry("bin/busybox", 0o100755, 0, &busybox);
    cpio.entry("init", 0o100755, 0, INIT.as_bytes());
    let mut names = String::new();
    for (name, file) in &order {
        let data = decompressed(&kernel.modules.join(file))?;
        cpio.entry(&format!("lib/modules/{name}.ko"), 0o100644, 0, &data);
        names.push_str(name);
        names.push('\n');
    }
    cpio.entry("modules.order", 0o100644, 0, names.as_bytes());
    fs::write(out, cpio.finish()).with_context(|| format!("writing {}", out.display()))
}

/// `name` of a module file (`kernel/net/9p/9pnet_virtio.ko.xz` is
/// `9pnet_virtio`; dashes and underscores are the same to the kernel).
fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

/// The modules to load, dependencies first, as (name, file under the
/// modules directory); built-in ones are left out.
fn module_order(modules: &Path) -> Result<Vec<(String, String)>> {
    let dep = fs::read_to_string(modules.join("modules.dep")).context("reading modules.dep")?;
    let builtin: HashSet<String> = fs::read_to_string(modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
    let graph: HashMap<String, (String, Vec<String>)> = dep
        .lines()
        .filter_map(|line| {
            let (file, deps) = line.split_once(':')?;
            let deps = deps.split_whitespace().map(str::to_string).collect();
            Some((module_name(file), (file.to_string(), deps)))
        })
        .collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    fn visit(
        name: &str,
        graph: &HashMap<String, (String, Vec<String>)>,
        seen: &mut HashSet<String>,
        order: &mut Vec<(String, String)>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let Some((file, deps)) = graph.get(name) else {
            return;
        };
        for dep in deps {
            visit(&module_name(dep), graph, seen, order);
        }
        order.push((name.to_string(), file.clone()));
    }
    for &wanted in MODULES {
        if !graph.contains_key(wanted) && !builtin.contains(wanted) {
            bail!("module {wanted} is neither in modules.dep nor built in");
        }
        visit(wanted, &graph, &mut seen, &mut order);
    }
    Ok(order)
}

fn decompressed(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|ext| ext.to_str()) {
        Some("ko") => return fs::read(path).with_context(|| format!("reading {}", path.display())),
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("unknown module compression: {}", path.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("starting {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed: {}", path.display(), out.status);
    }
    Ok(out.stdout)
}

/// A cpio archive in the "newc" format the kernel unpacks an initramfs from.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev >> 8,
            rdev & 0xff,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_load_first_and_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
             kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n\
             kernel/net/9p/9pnet.ko.xz:\nkernel/fs/netfs/netfs.ko.zst:\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        let names: Vec<String> = module_order(dir.path())
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["9pnet", "9pnet_virtio", "netfs", "9p"]);
    }

    #[test]
    fn newc_entries_are_aligned() {
        let mut cpio = Cpio::default();
        cpio.entry("init", 0o100755, 0, b"abcde");
        assert_eq!(cpio.out.len() % 4, 0);
        assert!(cpio.out.starts_with(b"070701"));
        let out = cpio.finish();
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
