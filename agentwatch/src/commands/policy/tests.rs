use super::*;

#[test]
fn check_says_whether_the_file_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "action = \"alert\"\n").unwrap();
    assert!(check_command(Some(&good)).unwrap());
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "action = \"nope\"\n").unwrap();
    assert!(!check_command(Some(&bad)).unwrap());
    assert!(check_command(Some(&dir.path().join("missing.toml"))).is_err());
}
