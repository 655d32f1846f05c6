//! Content scanning on the real kernel: what a session reads counts by what
//! it holds, whenever and wherever the secret is, and only when there is one.
//!
//! Secrets are built at run time so this source holds none.

use agentwatch_tests::{Lab, Watched, assert_allowed, assert_blocked, expect_event, write};

const RAILWAY: &str = "127.0.0.2:443";
const CALL_RAILWAY: &str = "$PROBE connect-host backboard.railway.app:443";

fn railway_token() -> String {
    format!("RAILWAY_TOKEN={}-9b2e-4f7a-{}", "3c8d1e6f", "a15d0c4b7e92")
}

fn aws_keys() -> String {
    format!(
        "export AWS_ACCESS_KEY_ID={}{}\nexport AWS_SECRET_ACCESS_KEY={}{}\n",
        "AKIA", "Q7RZ2MXK4WBN5T3H", "kX3vR8bN2qLm7WzT5yHc", "9FdJ4sGp6EaU1oKiV0tY"
    )
}

/// A directory outside the lab's home (the workspace), so only the read
/// can find what is in it.
fn outside(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    write(&path, content);
    path.display().to_string()
}

#[test]
fn a_secret_already_in_the_workspace_counts_at_once_after_its_first_read() {
    let lab = Lab::new();
    write(
        &lab.path("notes/handover.md"),
        &format!("Deploys go through CI.\n\n{}\n", railway_token()),
    );
    // The call follows the read at once: the scan made before the start
    // already made the file a credential.
    for attempt in 0..3 {
        let railway = lab.listen(RAILWAY);
        let watched = lab.run(
            &[],
            &[],
            &format!("grep -r TOKEN notes/ >/dev/null\n{CALL_RAILWAY}"),
        );
        assert_blocked(&watched, &railway, &format!("attempt {attempt}"));
    }
}

#[test]
fn a_workspace_env_without_a_secret_is_no_credential() {
    let lab = Lab::new();
    write(&lab.path(".env"), "PORT=3000\nDEBUG=1\n");
    write(&lab.path("prod.tfvars"), "region = \"eu-west-1\"\n");
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &[],
        &format!("cat .env prod.tfvars >/dev/null\nsleep 1\n{CALL_RAILWAY}"),
    );
    assert_allowed(&watched, &railway, ".env and .tfvars without secrets");
}

#[test]
fn a_workspace_env_with_a_secret_counts() {
    let lab = Lab::new();
    write(
        &lab.path(".env"),
        &format!(
            "PORT=3000\nSESSION_SECRET={}{}\n",
            "h7Kq2Vx9Lm4T", "pR8sW3nZ6cYb"
        ),
    );
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(&[], &[], &format!("cat .env >/dev/null\n{CALL_RAILWAY}"));
    assert_blocked(&watched, &railway, ".env holding a secret");
    expect_event!(watched.events, "alert", { "credential/class" => "workspace" });
}

#[test]
fn a_copy_in_dev_shm_is_scanned() {
    let lab = Lab::new();
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm");
    let copy = outside(shm.path(), "railway.txt", &format!("{}\n", railway_token()));
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &[],
        &format!("cat {copy} >/dev/null\nsleep 1\n{CALL_RAILWAY}"),
    );
    assert_blocked(&watched, &railway, "a token copied to /dev/shm");
    expect_event!(watched.events, "found", { "provider" => "railway" });
}

#[test]
fn every_provider_a_file_names_counts() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    // An AWS key above the Railway token: the first finding is AWS's, and
    // AWS credentials alone do not count against Railway.
    let script = outside(
        dir.path(),
        "deploy.sh",
        &format!("#!/bin/sh\n{}{}\nrailway up\n", aws_keys(), railway_token()),
    );
    let railway = lab.listen(RAILWAY);
    let watched = lab.run(
        &[],
        &[],
        &format!("cat {script} >/dev/null\nsleep 1\n{CALL_RAILWAY}"),
    );
    assert_blocked(&watched, &railway, "Railway token below an AWS key");
    expect_event!(watched.events, "found", { "provider" => "aws" });
    expect_event!(watched.events, "found", { "provider" => "railway" });
}

#[test]
fn a_read_just_before_the_command_exits_is_still_scanned() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let notes = outside(dir.path(), "notes.txt", &format!("{}\n", railway_token()));
    let watched: Watched = lab.run(&[], &[], &format!("cat {notes} >/dev/null"));
    assert_eq!(watched.code(), 0, "{}", watched.stderr);
    let found = expect_event!(watched.events, "found", { "provider" => "railway" });
    assert_eq!(found["path"], notes.as_str());
}
