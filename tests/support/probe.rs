//! `aw-probe CMD ARGS`: one system call the tests want to see traced.

use agentwatch_common::first_write::fixtures::{self, client_hello};
use std::{
    ffi::CString,
    io::Write as _,
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
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

/// `open_by_handle_at` of the handle `name_to_handle_at` gives for `path`
/// (root only), then a read of the file: returns the bytes read.
fn open_by_handle(path: &str) -> i64 {
    const MAX_HANDLE_SZ: usize = 128;
    #[repr(C)]
    struct Handle {
        handle_bytes: u32,
        handle_type: i32,
        f_handle: [u8; MAX_HANDLE_SZ],
    }
    let mut handle = Handle {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    // Any descriptor on the file's mount names the mount: its directory.
    let dir = std::path::Path::new(path)
        .parent()
        .and_then(|dir| dir.to_str());
    let (path, root) = (cstring(path), cstring(dir.unwrap_or("/")));
    let mut mount_id = 0;
    let mut buf = [0u8; 256];
    // SAFETY: valid strings; `Handle` has the layout of `struct file_handle`
    // with room for MAX_HANDLE_SZ bytes, as handle_bytes says.
    unsafe {
        let handle = (&mut handle as *mut Handle).cast::<libc::file_handle>();
        if libc::name_to_handle_at(libc::AT_FDCWD, path.as_ptr(), handle, &mut mount_id, 0) < 0 {
            return -1;
        }
        let mount_fd = libc::open(root.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        let fd = libc::open_by_handle_at(mount_fd, handle, libc::O_RDONLY);
        if fd < 0 {
            return -2;
        }
        libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) as i64
    }
}

/// `IORING_OP_OPENAT` of `path` through an io_uring, then a read of it:
/// returns the bytes read. With `direct`, the file goes into the ring's
/// own file table (a direct descriptor) and is read from there.
fn uring_open(path: &str, direct: bool) -> i64 {
    use io_uring::{IoUring, opcode, types};
    let path = cstring(path);
    let mut ring = IoUring::new(4).expect("io_uring_setup");
    let mut open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr());
    if direct {
        ring.submitter()
            .register_files_sparse(1)
            .expect("a file table");
        open = open.file_index(Some(
            types::DestinationSlot::try_from_slot_target(0).expect("slot"),
        ));
    }
    let result = complete(&mut ring, &open.build());
    if result < 0 {
        return result;
    }
    let mut buf = [0u8; 256];
    let read = if direct {
        opcode::Read::new(types::Fixed(0), buf.as_mut_ptr(), buf.len() as u32).build()
    } else {
        opcode::Read::new(types::Fd(result as i32), buf.as_mut_ptr(), buf.len() as u32).build()
    };
    complete(&mut ring, &read)
}

/// Submits one entry and waits for its result.
fn complete(ring: &mut io_uring::IoUring, entry: &io_uring::squeue::Entry) -> i64 {
    // SAFETY: every buffer and path the entry points to outlives the wait.
    unsafe { ring.submission().push(entry).expect("room in the queue") };
    ring.submit_and_wait(1).expect("io_uring_enter");
    let cqe = ring.completion().next().expect("a completion");
    i64::from(cqe.result())
}

/// Holds perf events open until killed, so that the static keys they
/// enable stay enabled and their code is not patched again while the tests
/// run (the VM lane: qemu's TCG has been seen to run a stale `int3` after
/// such patching, an oops in `__schedule`, and to spin in patched code in
/// `syscall_trace_enter` and `do_exit`): a task-bound dummy event keeps
/// `perf_sched_events` (agentwatch's per-process uprobes are task-bound
/// perf events), and a tracepoint event on each tracepoint agentwatch
/// attaches to keeps it registered while agentwatch's programs come and go
/// (a syscall's entry and exit stand for every syscall's: they are the
/// `sys_enter`/`sys_exit` tracepoints).
fn hold_static_keys() -> i64 {
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_TYPE_TRACEPOINT: u32 = 2;
    const PERF_COUNT_SW_DUMMY: u64 = 9;
    // `struct perf_event_attr` as of PERF_ATTR_SIZE_VER8: type, size,
    // config, and the rest zero.
    let open = |kind: u32, config: u64, pid: i32, cpu: i32| {
        let mut attr = [0u64; 17];
        attr[0] = u64::from(kind) | ((size_of_val(&attr) as u64) << 32);
        attr[1] = config;
        // SAFETY: a valid attr buffer of the size it declares.
        unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), pid, cpu, -1, 0) }
    };
    let fd = open(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_DUMMY, 0, -1);
    if fd < 0 {
        return fd;
    }
    for event in [
        "syscalls/sys_enter_getppid",
        "syscalls/sys_exit_getppid",
        "sched/sched_process_fork",
        "sched/sched_process_exec",
        "sched/sched_process_exit",
        "io_uring/io_uring_submit_req",
        "io_uring/io_uring_complete",
    ] {
        let id = std::fs::read_to_string(format!("/sys/kernel/tracing/events/{event}/id"))
            .ok()
            .and_then(|id| id.trim().parse::<u64>().ok());
        // Any CPU's event registers the tracepoint for every CPU.
        match id {
            Some(id) if open(PERF_TYPE_TRACEPOINT, id, -1, 0) >= 0 => {}
            _ => eprintln!("aw-probe: cannot hold {event}"),
        }
    }
    loop {
        // SAFETY: pause(2) has no arguments.
        unsafe { libc::pause() };
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

/// Creates `count` files in `dir` and opens each: a thread's repeat of an
/// open is counted, not reported, so every open here is of a file of its own.
fn open_many(dir: &str, count: u64) -> i64 {
    for i in 0..count {
        let path = cstring(&format!("{dir}/{i}"));
        for flags in [libc::O_WRONLY | libc::O_CREAT, libc::O_RDONLY] {
            // SAFETY: valid NUL-terminated string.
            unsafe {
                let fd = libc::open(path.as_ptr(), flags, 0o600);
                if fd >= 0 {
                    libc::close(fd);
                }
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

/// A plaintext request that changes something: a `GET` only reads, and
/// passes even to an infrastructure host.
fn http_request(host: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: aw-probe\r\nContent-Length: 0\r\n\r\n")
        .into_bytes()
}

fn proxy_connect(target: &str) -> Vec<u8> {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes()
}

/// Connects, then writes `bytes`: the bytes written, or `-errno` of the
/// connect or the write.
fn connect_write(addr: &str, bytes: &[u8]) -> i64 {
    let addr: SocketAddr = addr.parse().expect("ADDR:PORT");
    match TcpStream::connect(addr) {
        Ok(mut stream) => write_result(stream.write(bytes)),
        Err(error) => errno(&error),
    }
}

/// One connection, two requests: one before the credential at `path` is
/// read and one after. Prints the first write's result; returns the second's.
fn keep_alive(addr: &str, host: &str, path: &str) -> i64 {
    let addr: SocketAddr = addr.parse().expect("ADDR:PORT");
    let mut stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(error) => return errno(&error),
    };
    println!("{}", write_result(stream.write(&http_request(host))));
    if std::fs::read(path).is_err() {
        return -i64::from(libc::ENOENT);
    }
    write_result(stream.write(&http_request(host)))
}

/// Opens a connection to ADDR and holds it unwritten, then writes a
/// request for HOST on a second one: what a full socket table does to it.
fn second_socket(addr: &str, host: &str) -> i64 {
    let addr: SocketAddr = addr.parse().expect("ADDR:PORT");
    let _held = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(error) => return errno(&error),
    };
    connect_write(&addr.to_string(), &http_request(host))
}

/// TCP Fast Open: a listener on ADDR (this process's own, accepting data in
/// a SYN without a cookie), then a request for HOST sent in the SYN of a
/// connection to it. Returns the bytes the listener received within a second.
fn fast_open(addr: &str, host: &str) -> i64 {
    use std::{io::Read as _, os::fd::AsRawFd as _, time::Duration};
    let addr: SocketAddr = addr.parse().expect("ADDR:PORT");
    let SocketAddr::V4(v4) = addr else {
        return -i64::from(libc::EAFNOSUPPORT);
    };
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(error) => return errno(&error),
    };
    let set = |fd: i32, option: i32, value: i32| {
        // SAFETY: a valid descriptor and a pointer to an int of the given size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                option,
                (&raw const value).cast(),
                size_of::<i32>() as u32,
            )
        }
    };
    set(listener.as_raw_fd(), libc::TCP_FASTOPEN, 8);
    set(listener.as_raw_fd(), libc::TCP_FASTOPEN_NO_COOKIE, 1);
    let request = http_request(host);
    let sockaddr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: plain calls on a descriptor this function owns, with valid
    // pointers and lengths.
    let client = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        set(fd, libc::TCP_FASTOPEN_NO_COOKIE, 1);
        let sent = libc::sendto(
            fd,
            request.as_ptr().cast(),
            request.len(),
            libc::MSG_FASTOPEN | libc::MSG_DONTWAIT,
            (&raw const sockaddr).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        );
        if sent < 0 {
            let error = -i64::from(*libc::__errno_location());
            libc::close(fd);
            return error;
        }
        fd
    };
    // A refused SYN never completes the handshake: poll, do not block.
    let _ = listener.set_nonblocking(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut received = 0;
    while std::time::Instant::now() < deadline {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 4096];
            received = stream.read(&mut buf).unwrap_or(0);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(client) };
    received as i64
}

/// A connected UDP socket's datagram (how QUIC sends).
fn udp_send(addr: &str) -> i64 {
    let addr: SocketAddr = addr.parse().expect("ADDR:PORT");
    let socket = match UdpSocket::bind("0.0.0.0:0") {
        Ok(socket) => socket,
        Err(error) => return errno(&error),
    };
    if let Err(error) = socket.connect(addr) {
        return errno(&error);
    }
    write_result(socket.send(b"\xc0quic-initial"))
}

/// `socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)`: 0, or `-errno`.
fn mptcp_socket() -> i64 {
    // SAFETY: plain integer arguments; the descriptor is closed at once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP);
        if fd < 0 {
            return -i64::from(*libc::__errno_location());
        }
        libc::close(fd);
    }
    0
}

fn write_result(written: std::io::Result<usize>) -> i64 {
    match written {
        Ok(n) => n as i64,
        Err(error) => errno(&error),
    }
}

fn errno(error: &std::io::Error) -> i64 {
    -i64::from(error.raw_os_error().unwrap_or(1))
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
        ["open-by-handle", path] => open_by_handle(path),
        ["uring-open", path] => uring_open(path, false),
        ["hold-static-keys"] => hold_static_keys(),
        ["uring-open-direct", path] => uring_open(path, true),
        ["open-many", dir, count] => open_many(dir, count.parse().expect("count")),
        ["connect", addr] => connect(addr),
        ["connect-host", target] => connect_host(target),
        ["read-connect", path, addr] => read_then_connect(path, addr),
        ["tls", addr, server_name] => {
            connect_write(addr, &client_hello(&[fixtures::server_name(server_name)]))
        }
        ["http", addr, host] => connect_write(addr, &http_request(host)),
        ["proxy-connect", addr, target] => connect_write(addr, &proxy_connect(target)),
        ["keep-alive", addr, host, path] => keep_alive(addr, host, path),
        ["udp", addr] => udp_send(addr),
        ["second-socket", addr, host] => second_socket(addr, host),
        ["mptcp"] => mptcp_socket(),
        ["fast-open", addr, host] => fast_open(addr, host),
        _ => {
            eprintln!(
                "usage: aw-probe openat2 PATH | openat-in DIR NAME | open-by-handle PATH \
                 | uring-open PATH | uring-open-direct PATH \
                 | open-many DIR N | connect ADDR:PORT \
                 | tls ADDR:PORT SNI | http ADDR:PORT HOST | proxy-connect ADDR:PORT HOST:PORT \
                 | keep-alive ADDR:PORT HOST PATH | udp ADDR:PORT | mptcp \
                 | second-socket ADDR:PORT HOST | fast-open ADDR:PORT HOST"
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
