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

fn scanner() -> Arc<Scanner> {
    Arc::new(Scanner::new(&[(
        "RAILWAY_TOKEN".to_string(),
        "railway".to_string(),
    )]))
}

/// A secret for a file's content, built here so this source holds none.
fn secret() -> String {
    format!(
        "RAILWAY_TOKEN={}-4c1d-9a7e-{}\n",
        "5b0e2f8a-71d3", "c84e1f09d2b6"
    )
}

fn write(root: &Path, relative: &str, content: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn relative(root: &Path, files: &[Find]) -> Vec<String> {
    let mut found: Vec<String> = files
        .iter()
        .map(|f| f.path.strip_prefix(root).unwrap().display().to_string())
        .collect();
    found.sort();
    found
}

fn walk(root: &Path, names: Names) -> Walk {
    Walk::new(names, scanner(), root)
}

fn walk_all(walk: &mut Walk) -> Vec<Find> {
    let mut found = Vec::new();
    while !walk.finished() {
        found.extend(walk.step(Duration::from_secs(5)));
    }
    found
}

#[test]
fn files_holding_secrets_are_found_anywhere_but_skipped_dirs() {
    let root = tempfile::tempdir().unwrap();
    let secret = secret();
    write(root.path(), "services/api/.env.production", &secret);
    write(root.path(), "notes/deploy.md", &secret);
    write(root.path(), ".git/config", &secret);
    write(root.path(), ".git/logs/HEAD", &secret);
    write(root.path(), "node_modules/pkg/.env", &secret);
    write(root.path(), "venv/pyvenv.cfg", "home = /usr/bin\n");
    write(root.path(), "venv/lib/.env", &secret);
    write(
        root.path(),
        "target/CACHEDIR.TAG",
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    );
    write(root.path(), "target/debug/notes.txt", &secret);
    // Named like generated directories, but nothing marks them so.
    write(root.path(), "build/.env", &secret);
    write(root.path(), "README.md", "no secrets here\n");
    let names = names(&[class(&[".env", ".env.*", "*.tfvars"])]);
    let found = walk_all(&mut walk(root.path(), names));
    assert_eq!(
        relative(root.path(), &found),
        [
            ".git/config",
            "build/.env",
            "notes/deploy.md",
            "services/api/.env.production"
        ]
    );
    // The catalog's names give their class; other files' findings will.
    let named: Vec<_> = found
        .iter()
        .map(|f| {
            (
                f.path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".env"),
                f.named,
            )
        })
        .collect();
    assert!(
        named.iter().all(|(env, class)| *env == class.is_some()),
        "{named:?}"
    );
}

#[test]
fn a_named_file_without_a_secret_is_no_credential() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), ".env", "PORT=3000\nDEBUG=1\n");
    write(root.path(), "prod.tfvars", "region = \"eu-west-1\"\n");
    let found = walk_all(&mut walk(
        root.path(),
        names(&[class(&[".env", "*.tfvars"])]),
    ));
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn the_walk_goes_breadth_first_and_resumes_where_it_stopped() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "a/b/c/d/.env", &secret());
    write(root.path(), ".env", &secret());
    let mut walk = walk(root.path(), names(&[class(&[".env"])]));
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
fn the_walk_has_no_depth_limit() {
    let root = tempfile::tempdir().unwrap();
    let deep: String = (0..40).map(|level| format!("d{level}/")).collect();
    write(root.path(), &format!("{deep}.env"), &secret());
    let found = walk_all(&mut walk(root.path(), names(&[class(&[".env"])])));
    assert_eq!(relative(root.path(), &found), [format!("{deep}.env")]);
}

#[tokio::test]
async fn what_the_start_budget_leaves_is_walked_in_the_background() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "deep/down/.env", &secret());
    let mut walks = Walks::new(scanner());
    let now = walks.start(names(&[class(&[".env"])]), root.path(), 7, Duration::ZERO);
    assert!(now.is_empty());
    let later = tokio::time::timeout(Duration::from_secs(10), walks.next())
        .await
        .expect("the background walk reports");
    assert_eq!(later.generation, 7);
    assert_eq!(relative(root.path(), &later.files), ["deep/down/.env"]);
}
