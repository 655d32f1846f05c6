//! Content scanning on the real kernel: what a session reads counts by what
//! it holds, whenever and wherever the secret is, and only when there is one;
//! and `agentwatch scan` as a CI gate sees it.
//!
//! Secrets are built at run time so this source holds none.

use agentwatch_tests::{
    Lab, Watched, agentwatch, assert_allowed, assert_blocked, expect_event, output_with_timeout,
    write,
};
use serde_json::Value;

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

/// `agentwatch scan ARGS`, as CI runs it.
fn scan(args: &[&str]) -> std::process::Output {
    output_with_timeout(
        std::process::Command::new(agentwatch())
            .arg("scan")
            .args(args),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn scan_writes_sarif_that_code_scanning_takes_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("deploy/env.sh"), &aws_keys());
    let report = dir.path().join("agentwatch.sarif");
    let output = scan(&[
        "--format",
        "sarif",
        "--report-path",
        report.to_str().unwrap(),
        dir.path().join("deploy").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        text(&output.stderr).contains("2 credentials in 1 files; report in"),
        "{output:?}"
    );
    let written = std::fs::read_to_string(&report).unwrap();
    assert!(!written.contains("Q7RZ2MXK4WBN5T3H"), "{written}");
    let sarif: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(run["tool"]["driver"]["name"], "agentwatch");
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{written}");
    for result in results {
        let rule = &rules[result["ruleIndex"].as_u64().unwrap() as usize];
        assert_eq!(rule["id"], result["ruleId"]);
        assert_eq!(result["level"], "error");
        assert!(result["message"]["text"].as_str().unwrap().contains('…'));
        let location = &result["locations"][0]["physicalLocation"];
        assert!(
            location["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .ends_with("/deploy/env.sh"),
            "{location}"
        );
        assert!(location["region"]["startLine"].as_u64().unwrap() >= 1);
    }
    assert_eq!(run["invocations"][0]["executionSuccessful"], true);
}

#[test]
fn scan_takes_a_file_argument() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.sh");
    write(&file, &aws_keys());
    let output = scan(&[file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "{}:1: aws-access-key-id (aws) AKIA…3H",
            file.display()
        )),
        "{stdout}"
    );
}

#[test]
fn a_baseline_passes_known_findings_and_fails_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    write(&repo.join("env.sh"), &aws_keys());
    // Test data the ignore file leaves out.
    write(
        &repo.join("fixtures/token.env"),
        &format!("{}\n", railway_token()),
    );
    write(&repo.join(".agentwatchignore"), "fixtures/\n");
    let baseline = dir.path().join("baseline");
    let repo_arg = repo.to_str().unwrap();
    let accepted = scan(&["--write-baseline", baseline.to_str().unwrap(), repo_arg]);
    assert_eq!(accepted.status.code(), Some(0), "{accepted:?}");
    let known = scan(&["--baseline", baseline.to_str().unwrap(), repo_arg]);
    assert_eq!(known.status.code(), Some(0), "{known:?}");
    assert!(
        text(&known.stdout)
            .contains("no credentials found in 2 files scanned (2 more in the baseline)"),
        "{known:?}"
    );

    write(&repo.join("notes.md"), &format!("{}\n", railway_token()));
    let new = scan(&[
        "--baseline",
        baseline.to_str().unwrap(),
        "--format",
        "json",
        repo_arg,
    ]);
    assert_eq!(new.status.code(), Some(1), "{new:?}");
    let report: Value = serde_json::from_slice(&new.stdout).unwrap();
    assert_eq!(report["complete"], true);
    assert_eq!(report["suppressed"], 2);
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["path"], format!("{repo_arg}/notes.md"));
    assert_eq!(findings[0]["provider"], "railway");
}

#[test]
fn a_scan_cut_by_max_files_fails_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.txt"), "nothing\n");
    write(&dir.path().join("b.txt"), "nothing\n");
    let output = scan(&["--max-files", "1", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("stopped at --max-files 1: the rest of the files were not scanned"),
        "{stderr}"
    );
    assert!(stderr.contains("incomplete scan"), "{stderr}");
    let all = scan(&["--max-files", "2", dir.path().to_str().unwrap()]);
    assert_eq!(all.status.code(), Some(0), "{all:?}");
}
