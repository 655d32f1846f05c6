//! Everything that keeps the kernel's tables current: the policy compiled
//! into them, credential files expanded (and watched for with inotify),
//! infrastructure addresses from the resolver and /etc/hosts, the environments of running
//! processes, and files found to hold credentials by the content scanner.

pub mod content;
pub mod credentials;
pub mod environ;
pub mod hostsfile;
pub mod resolver;
pub mod tables;
pub mod watch;
pub mod workspace;
