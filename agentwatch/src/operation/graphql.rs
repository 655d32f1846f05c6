//! The GraphQL operations of a request body: a JSON object with `query` (and maybe
//! `operationName`), a batched array of them, or an `application/graphql` document. A whole
//! document is read with `graphql-parser`; one cut short (the kernel hands over a bounded
//! head) is scanned for its operations and their top-level fields as far as it goes, so that a
//! destructive field that is visible is seen.

use std::sync::LazyLock;

use graphql_parser::query::{Definition, Document, OperationDefinition, Selection, SelectionSet};
use regex::Regex;

/// One operation of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlOperation {
    pub mutation: bool,
    /// The top-level fields (by field name, not alias), as far as the document was seen.
    pub fields: Vec<String>,
    /// Whether the document was cut inside this operation (more fields may follow).
    pub cut: bool,
}

/// What a body shows of its operations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GraphqlBody {
    pub operations: Vec<GraphqlOperation>,
    /// Whether more operations (of a batch or a document) may follow what was seen.
    pub more: bool,
}

/// The operations of a GraphQL request body; `complete` says whether the body is whole.
pub fn operations(body: &[u8], graphql_media_type: bool, complete: bool) -> GraphqlBody {
    let text = String::from_utf8_lossy(body);
    if graphql_media_type {
        return document(&text, None, !complete);
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(batch)) => {
            let mut all = GraphqlBody::default();
            for item in &batch {
                let one = json_request(item);
                all.operations.extend(one.operations);
                all.more |= one.more;
            }
            all
        }
        Ok(value) => json_request(&value),
        Err(_) => cut_json(&text),
    }
}

/// `{"query": "...", "operationName": "..."}`; a request without a query (a persisted
/// query's hash) shows nothing.
fn json_request(value: &serde_json::Value) -> GraphqlBody {
    match value.get("query").and_then(|q| q.as_str()) {
        Some(query) => document(
            query,
            value.get("operationName").and_then(|n| n.as_str()),
            false,
        ),
        None => GraphqlBody {
            operations: Vec::new(),
            more: true,
        },
    }
}

/// A JSON body cut short: every `"query"` string in it, the last one maybe cut too.
fn cut_json(text: &str) -> GraphqlBody {
    static QUERY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#""query"\s*:\s*"((?:[^"\\]|\\.)*)("?)"#).expect("query regex")
    });
    let mut all = GraphqlBody {
        operations: Vec::new(),
        // A batch cut short may hold further operations.
        more: text.trim_start().starts_with('['),
    };
    for found in QUERY.captures_iter(text) {
        let closed = !found[2].is_empty();
        let raw = found[1].trim_end_matches('\\');
        let Ok(query) = serde_json::from_str::<String>(&format!("\"{raw}\"")) else {
            continue;
        };
        all.operations
            .extend(document(&query, None, !closed).operations);
    }
    all
}

/// A document's operations, all of them unless `operation_name` picks one (the one a server
/// runs).
fn document(text: &str, operation_name: Option<&str>, cut: bool) -> GraphqlBody {
    if !cut && let Ok(doc) = graphql_parser::parse_query::<&str>(text) {
        let mut operations: Vec<(Option<&str>, GraphqlOperation)> = doc
            .definitions
            .iter()
            .filter_map(|def| match def {
                Definition::Operation(op) => Some(parsed(&doc, op)),
                Definition::Fragment(_) => None,
            })
            .collect();
        if let Some(wanted) = operation_name
            && operations.iter().any(|(name, _)| *name == Some(wanted))
        {
            operations.retain(|(name, _)| *name == Some(wanted));
        }
        return GraphqlBody {
            operations: operations.into_iter().map(|(_, op)| op).collect(),
            more: false,
        };
    }
    scan(text, cut)
}

fn parsed<'a>(
    doc: &Document<'a, &'a str>,
    op: &OperationDefinition<'a, &'a str>,
) -> (Option<&'a str>, GraphqlOperation) {
    let (name, mutation, selection) = match op {
        OperationDefinition::SelectionSet(set) => (None, false, set),
        OperationDefinition::Query(q) => (q.name, false, &q.selection_set),
        OperationDefinition::Mutation(m) => (m.name, true, &m.selection_set),
        OperationDefinition::Subscription(s) => (s.name, false, &s.selection_set),
    };
    let mut fields = Vec::new();
    top_fields(doc, selection, &mut fields, 0);
    let op = GraphqlOperation {
        mutation,
        fields,
        cut: false,
    };
    (name, op)
}

/// Fragments nest; a document that nests them deeper is not a real client's.
const MAX_FRAGMENT_DEPTH: usize = 8;

/// The fields of a selection set, through fragments spread or inlined at its top level.
fn top_fields<'a>(
    doc: &Document<'a, &'a str>,
    set: &SelectionSet<'a, &'a str>,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > MAX_FRAGMENT_DEPTH {
        return;
    }
    for item in &set.items {
        match item {
            Selection::Field(field) => out.push(field.name.to_string()),
            Selection::InlineFragment(inline) => {
                top_fields(doc, &inline.selection_set, out, depth + 1)
            }
            Selection::FragmentSpread(spread) => {
                for def in &doc.definitions {
                    if let Definition::Fragment(f) = def
                        && f.name == spread.fragment_name
                    {
                        top_fields(doc, &f.selection_set, out, depth + 1);
                    }
                }
            }
        }
    }
}

/// The tokens that matter to the scan; whitespace, commas, comments and strings are skipped.
static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?s)(?P<skip>[\s,\u{feff}]+|#[^\n\r]*|"""(?:\\"""|[^"]|"[^"]|""[^"])*(?:"""|$)"#,
        r#"|"(?:[^"\\\n]|\\.)*(?:"|$))"#,
        r#"|(?P<name>[_A-Za-z][_0-9A-Za-z]*)|(?P<spread>\.\.\.)|(?P<punct>[{}()\[\]:@$!=|&])"#,
        r#"|(?P<other>.)"#,
    ))
    .expect("graphql token regex")
});

/// Scans a document that did not parse (cut short, or not valid) for its operations and their
/// top-level field names: `mutation Name($v: T) @d { a: fieldName(args) { ... } other }`.
fn scan(text: &str, cut: bool) -> GraphqlBody {
    let mut operations: Vec<GraphqlOperation> = Vec::new();
    // Depth of braces and parentheses; fields are names at brace depth 1, outside arguments,
    // where a `... on Type {` fragment does not count as a level.
    let (mut braces, mut parens) = (Vec::<bool>::new(), 0usize);
    let (mut pending_kind, mut after_colon, mut skip_name) = (None::<bool>, false, false);
    let mut fragment_definition = false;
    let level = |braces: &[bool]| braces.iter().filter(|counts| **counts).count();
    // After `...`: a fragment's name follows, or `on Type` and the braces of an inline one.
    let mut spread = Spread::No;
    for token in TOKEN.captures_iter(text) {
        if token.name("skip").is_some() || token.name("other").is_some() {
            continue;
        }
        if token.name("spread").is_some() {
            spread = Spread::Started;
            continue;
        }
        if let Some(punct) = token.name("punct") {
            match punct.as_str() {
                "(" => parens += 1,
                ")" => parens = parens.saturating_sub(1),
                _ if parens > 0 => {}
                "{" => {
                    if braces.is_empty() && !fragment_definition {
                        operations.push(GraphqlOperation {
                            mutation: pending_kind.take().unwrap_or(false),
                            fields: Vec::new(),
                            cut: false,
                        });
                    }
                    braces.push(braces.is_empty() || spread == Spread::No);
                    spread = Spread::No;
                }
                "}" => {
                    braces.pop();
                    if braces.is_empty() {
                        fragment_definition = false;
                    }
                }
                ":" => after_colon = true,
                "@" => skip_name = true,
                _ => {}
            }
            continue;
        }
        let Some(name) = token.name("name").map(|n| n.as_str()) else {
            continue;
        };
        if parens > 0 {
            continue;
        }
        if braces.is_empty() {
            match name {
                "mutation" => pending_kind = Some(true),
                "query" | "subscription" => pending_kind = Some(false),
                "fragment" => fragment_definition = true,
                _ => {}
            }
            continue;
        }
        if std::mem::take(&mut skip_name) {
            // A directive's name.
            continue;
        }
        match spread {
            Spread::Started if name == "on" => {
                spread = Spread::On;
                continue;
            }
            // A named fragment's fields are elsewhere in the document.
            Spread::Started => {
                spread = Spread::No;
                continue;
            }
            // The type of an inline fragment.
            Spread::On => continue,
            Spread::No => {}
        }
        if level(&braces) == 1 && !fragment_definition {
            let op = operations
                .last_mut()
                .expect("an operation opened the brace");
            if std::mem::take(&mut after_colon) {
                // `alias: field`: the alias was taken for a field; it is the field that counts.
                op.fields.pop();
            }
            op.fields.push(name.to_string());
        }
        after_colon = false;
    }
    let open = !braces.is_empty();
    if let Some(last) = operations.last_mut() {
        last.cut = open || cut;
    }
    GraphqlBody {
        operations,
        // Cut between operations, or in one's header before its fields: more may follow.
        more: (cut && !open) || pending_kind.is_some(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Spread {
    No,
    Started,
    On,
}
