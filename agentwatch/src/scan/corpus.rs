//! Recall and precision on a labelled corpus of realistic files
//! (`tests/scan-corpus`, fake secrets and decoys): the test fails when
//! either drops below what the scanner reached when the corpus was made.

use std::{collections::BTreeSet, path::Path};

use walkdir::WalkDir;

use super::Scanner;
use crate::{engine::credential_env, policy::Policy};

const RECALL_FLOOR: f64 = 1.0;
const PRECISION_FLOOR: f64 = 1.0;

/// (file, line) → provider ("-" when provenance is unknown).
fn labels(root: &Path) -> BTreeSet<(String, usize, String)> {
    let text = std::fs::read_to_string(root.join("labels.txt")).expect("labels.txt");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (place, provider) = line.split_once(' ').expect("path:line provider");
            let (path, number) = place.rsplit_once(':').expect("path:line");
            (
                path.to_string(),
                number.parse().expect("a line number"),
                provider.to_string(),
            )
        })
        .collect()
}

#[test]
fn recall_and_precision_on_the_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scan-corpus");
    let expected = labels(&root);
    let scanner = Scanner::new(&credential_env(&Policy::builtin()));
    let mut found = BTreeSet::new();
    for entry in WalkDir::new(&root).sort_by_file_name() {
        let entry = entry.unwrap();
        let relative = entry
            .path()
            .strip_prefix(&root)
            .unwrap()
            .display()
            .to_string();
        if !entry.file_type().is_file() || relative == "labels.txt" {
            continue;
        }
        for finding in scanner.scan_file(entry.path()).unwrap() {
            let provider = finding.provider.unwrap_or_else(|| "-".to_string());
            found.insert((relative.clone(), finding.line, provider));
        }
    }
    let hits = found.intersection(&expected).count();
    let recall = hits as f64 / expected.len() as f64;
    let precision = hits as f64 / found.len().max(1) as f64;
    let missed: Vec<_> = expected.difference(&found).collect();
    let wrong: Vec<_> = found.difference(&expected).collect();
    println!(
        "corpus: {} secrets, {} findings: recall {recall:.3}, precision {precision:.3}",
        expected.len(),
        found.len()
    );
    assert!(
        recall >= RECALL_FLOOR && precision >= PRECISION_FLOOR,
        "recall {recall:.3} (floor {RECALL_FLOOR}), precision {precision:.3} (floor \
         {PRECISION_FLOOR})\nmissed: {missed:#?}\nfalse or mislabelled: {wrong:#?}"
    );
}
