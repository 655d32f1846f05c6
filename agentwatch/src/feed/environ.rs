//! Credentials in environments: processes already running when agentwatch
//! starts were never seen at exec, so their `/proc/PID/environ` is read once
//! to record which credential variables they hold.

use std::collections::HashMap;

use crate::sys::proc;

/// Credential classes named by an environment block (`NAME=VALUE\0...`):
/// a variable counts when its value is non-empty.
pub fn classes_in(environ: &[u8], names: &HashMap<String, u64>) -> u64 {
    environ
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let text = std::str::from_utf8(entry).ok()?;
            let (name, value) = text.split_once('=')?;
            (!value.is_empty()).then(|| names.get(name).copied())?
        })
        .fold(0, |mask, classes| mask | classes)
}

/// (pid, classes) of every running process whose environment holds a
/// credential variable.
pub fn running_processes(names: &HashMap<String, u64>) -> Vec<(u32, u64)> {
    proc::pids()
        .into_iter()
        .filter_map(|pid| {
            // One that has exited, or a kernel thread, holds nothing to count.
            let environ = proc::environ_block(pid).ok()?;
            let classes = classes_in(&environ, names);
            (classes != 0).then_some((pid, classes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_empty_credential_variables_count() {
        let names = HashMap::from([
            ("RAILWAY_TOKEN".to_string(), 0b01),
            ("AWS_SESSION_TOKEN".to_string(), 0b10),
        ]);
        assert_eq!(classes_in(b"PATH=/bin\0RAILWAY_TOKEN=abc\0", &names), 0b01);
        assert_eq!(
            classes_in(b"RAILWAY_TOKEN=\0AWS_SESSION_TOKEN=x", &names),
            0b10
        );
        assert_eq!(classes_in(b"\xff\xfe\0=x\0", &names), 0);
    }

    #[test]
    fn this_process_is_found_when_it_holds_one() {
        // The test runner's own environment has PATH; call that a credential.
        let names = HashMap::from([("PATH".to_string(), 1)]);
        let me = std::process::id();
        assert!(
            running_processes(&names)
                .iter()
                .any(|(pid, classes)| *pid == me && *classes == 1)
        );
    }
}
