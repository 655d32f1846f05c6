//! `aw-probe CMD ARGS`: one system call the tests want to see traced.

use std::{
    ffi::CString,
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    process::ExitCode,
};

fn cstring(text: &str) -> CString {
    CString::new(text).expect("no NUL in argument")
}

/// `openat2(AT_FDCWD, path, {O_RDONLY})`.
fn openat2(path: &str) -> i64 {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: libc::O_RDONLY as u64,
        mode: 0,
        resolve: 0,
    };
    let path = cstring(path);
    // SAFETY: valid pointers for the duration of the call.
    unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const OpenHow,
            size_of::<OpenHow>(),
        )
    }
}

/// `openat(open(dir), name)`.
fn openat_in(dir: &str, name: &str) -> i64 {
    let dir = cstring(dir);
    let name = cstring(name);
    // SAFETY: valid NUL-terminated strings.
    unsafe {
        let dirfd = libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        if dirfd < 0 {
            return -1;
        }
        i64::from(libc::openat(dirfd, name.as_ptr(), libc::O_RDONLY))
    }
}

fn open_many(path: &str, count: u64) -> i64 {
    let path = cstring(path);
    for _ in 0..count {
        // SAFETY: valid NUL-terminated string.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
            if fd >= 0 {
                libc::close(fd);
            }
        }
    }
    0
}

fn connect(addr: &str) -> i64 {
    let addr: SocketAddr = addr.parse().expect("ADDR:PORT");
    result(TcpStream::connect(addr))
}

/// Resolves HOST through the system resolver (getaddrinfo), then connects
/// to its first IPv4 address.
fn connect_host(target: &str) -> i64 {
    let addrs = match target.to_socket_addrs() {
        Ok(addrs) => addrs,
        Err(_) => return -i64::from(libc::EHOSTUNREACH),
    };
    match addrs.into_iter().find(SocketAddr::is_ipv4) {
        Some(addr) => result(TcpStream::connect(addr)),
        None => -i64::from(libc::EHOSTUNREACH),
    }
}

/// Reads a file, then connects at once: the race agentwatch must not lose.
fn read_then_connect(path: &str, addr: &str) -> i64 {
    let addr: SocketAddr = addr.parse().expect("ADDR:PORT");
    if std::fs::read(path).is_err() {
        return -i64::from(libc::ENOENT);
    }
    result(TcpStream::connect(addr))
}

fn result(connected: std::io::Result<TcpStream>) -> i64 {
    match connected {
        Ok(_) => 0,
        Err(error) => -i64::from(error.raw_os_error().unwrap_or(1)),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["openat2", path] => openat2(path),
        ["openat-in", dir, name] => openat_in(dir, name),
        ["open-many", path, count] => open_many(path, count.parse().expect("count")),
        ["connect", addr] => connect(addr),
        ["connect-host", target] => connect_host(target),
        ["read-connect", path, addr] => read_then_connect(path, addr),
        _ => {
            eprintln!(
                "usage: aw-probe openat2 PATH | openat-in DIR NAME | open-many PATH N | connect ADDR:PORT"
            );
            return ExitCode::from(2);
        }
    };
    println!("{result}");
    if result >= 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
