use std::path::Path;

use super::*;

fn class(names: &[&str]) -> CredentialClass {
    CredentialClass {
        id: "test".into(),
        name: "test".into(),
        providers: None,
        files: Vec::new(),
        exclude_files: Vec::new(),
        env: Vec::new(),
        workspace_names: names.iter().map(|s| s.to_string()).collect(),
    }
}

fn write(root: &Path, relative: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, "x").unwrap();
}

fn relative(root: &Path, files: &[CredentialFile]) -> Vec<String> {
    let mut found: Vec<String> = files
        .iter()
        .map(|f| f.path.strip_prefix(root).unwrap().display().to_string())
        .collect();
    found.sort();
    found
}

fn walk_all(walk: &mut Walk) -> Vec<CredentialFile> {
    let mut found = Vec::new();
    while !walk.finished() {
        found.extend(walk.step(Duration::from_secs(5)));
    }
    found
}

#[test]
fn workspace_names_anywhere_but_skipped_dirs() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "services/api/.env.production");
    write(root.path(), "main.tfvars");
    write(root.path(), "node_modules/pkg/.env");
    write(root.path(), "venv/lib/.env");
    write(root.path(), "README.md");
    let names = names(&[class(&[".env", ".env.*", "*.tfvars"])]);
    let found = walk_all(&mut Walk::new(names, root.path()));
    assert_eq!(
        relative(root.path(), &found),
        ["main.tfvars", "services/api/.env.production"]
    );
}

#[test]
fn the_walk_goes_breadth_first_and_resumes_where_it_stopped() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "a/b/c/d/.env");
    write(root.path(), ".env");
    let mut walk = Walk::new(names(&[class(&[".env"])]), root.path());
    assert!(walk.step(Duration::ZERO).is_empty(), "no time, no work");
    assert!(!walk.finished());
    let found = walk_all(&mut walk);
    assert_eq!(
        relative(root.path(), &found[..1]),
        [".env"],
        "nearest first"
    );
    assert_eq!(found.len(), 2);
}

#[test]
fn the_walk_is_bounded_in_depth() {
    let root = tempfile::tempdir().unwrap();
    let deep: String = (0..=MAX_DEPTH).map(|level| format!("d{level}/")).collect();
    write(root.path(), &format!("{deep}.env"));
    let at_limit: String = (0..MAX_DEPTH).map(|level| format!("d{level}/")).collect();
    write(root.path(), &format!("{at_limit}.env"));
    let found = walk_all(&mut Walk::new(names(&[class(&[".env"])]), root.path()));
    assert_eq!(
        relative(root.path(), &found),
        [format!("{at_limit}.env")],
        "a file {MAX_DEPTH} levels down is found, one deeper is not"
    );
}

#[tokio::test]
async fn what_the_start_budget_leaves_is_walked_in_the_background() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "deep/down/.env");
    let mut walks = Walks::new();
    let now = walks.start(names(&[class(&[".env"])]), root.path(), 7, Duration::ZERO);
    assert!(now.is_empty());
    let later = tokio::time::timeout(Duration::from_secs(10), walks.next())
        .await
        .expect("the background walk reports");
    assert_eq!(later.generation, 7);
    assert_eq!(relative(root.path(), &later.files), ["deep/down/.env"]);
}
