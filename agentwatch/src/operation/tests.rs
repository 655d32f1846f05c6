use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;
use OperationClass::{Changes, Destructive, Reads, Unknown};

fn policy() -> &'static Policy {
    static POLICY: LazyLock<Policy> = LazyLock::new(Policy::builtin);
    &POLICY
}

const INCIDENT_BODY: &str =
    r#"{"query":"mutation { volumeDelete(volumeId: \"3f1c0a52-9b7e-4c1e-8a55-0d2f4b6e7a91\") }"}"#;
const LOGS_BODY: &str = r#"{"query":"query deploymentLogs($deploymentId: String!) { deploymentLogs(deploymentId: $deploymentId, limit: 500) { message timestamp severity } }","variables":{"deploymentId":"d-1"},"operationName":"deploymentLogs"}"#;

fn http1(method: &str, host: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.5.0\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// What curl writes on a new HTTP/2 connection: preface, SETTINGS, WINDOW_UPDATE, HEADERS
/// (split into a CONTINUATION), DATA.
fn http2(method: &str, host: &str, path: &str, body: &str) -> Vec<u8> {
    let mut encoder = loona_hpack::Encoder::new();
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b":method", method.as_bytes()),
        (b":scheme", b"https"),
        (b":authority", host.as_bytes()),
        (b":path", path.as_bytes()),
        (b"user-agent", b"curl/8.5.0"),
        (b"content-type", b"application/json"),
    ];
    let block = encoder.encode(headers);
    let (first, rest) = block.split_at(block.len() / 2);
    let mut out = PREFACE_FOR_TESTS.to_vec();
    out.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
    out.extend(frame(0x8, 0, 0, &[0, 0xff, 0, 0]));
    out.extend(frame(0x1, 0, 1, first));
    out.extend(frame(0x9, 0x4, 1, rest));
    out.extend(frame(0x0, 0x1, 1, body.as_bytes()));
    out
}

const PREFACE_FOR_TESTS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn request_class(provider: &str, bytes: &[u8]) -> Operation {
    let request = parse_request(bytes).expect("parses");
    Catalog::new(policy()).classify_request(provider, &request)
}

fn command(argv: &str) -> Option<Operation> {
    let argv: Vec<&str> = argv.split_whitespace().collect();
    Catalog::new(policy()).classify_command(&argv)
}

fn command_class(argv: &str) -> OperationClass {
    command(argv)
        .unwrap_or_else(|| panic!("{argv}: not cataloged"))
        .class
}

#[test]
fn the_incident_request_is_destructive_over_http1_and_http2() {
    let h1 = http1(
        "POST",
        "backboard.railway.app",
        "/graphql/v2",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer x"),
        ],
        INCIDENT_BODY,
    );
    let h2 = http2(
        "POST",
        "backboard.railway.app",
        "/graphql/v2",
        INCIDENT_BODY,
    );
    for bytes in [h1, h2] {
        let request = parse_request(&bytes).unwrap();
        assert_eq!(request.host.as_deref(), Some("backboard.railway.app"));
        assert_eq!(request.method, "POST");
        assert!(request.body_complete);
        let catalog = Catalog::new(policy());
        let provider = catalog
            .provider_of_host(request.host.as_deref().unwrap())
            .unwrap();
        let op = catalog.classify_request(&provider.id, &request);
        assert_eq!(op.class, Destructive);
        assert_eq!(op.kind, OperationKind::GraphqlMutation);
        assert_eq!(op.to_string(), "GraphQL mutation volumeDelete on Railway");
    }
}

#[test]
fn a_deploy_logs_query_reads() {
    for bytes in [
        http1(
            "POST",
            "backboard.railway.com",
            "/graphql/v2",
            &[],
            LOGS_BODY,
        ),
        http2("POST", "backboard.railway.com", "/graphql/v2", LOGS_BODY),
    ] {
        let op = request_class("railway", &bytes);
        assert_eq!(
            (op.kind, op.class),
            (OperationKind::GraphqlQuery, Reads),
            "{op}"
        );
        assert_eq!(op.name, "deploymentLogs");
    }
}

#[test]
fn every_railway_mutation_of_the_catalog_is_destructive_and_others_change() {
    for field in [
        "volumeDelete",
        "serviceDelete",
        "environmentDelete",
        "projectDelete",
        "projectScheduleDelete",
        "deploymentRemove",
        "volumeInstanceBackupDelete",
        "customDomainDelete",
    ] {
        let body = format!(r#"{{"query":"mutation M($id: String!) {{ {field}(id: $id) }}"}}"#);
        let op = request_class(
            "railway",
            &http1("POST", "backboard.railway.app", "/graphql/v2", &[], &body),
        );
        assert_eq!((op.class, op.name.as_str()), (Destructive, field));
    }
    let body = r#"{"query":"mutation { serviceInstanceUpdate(serviceId: \"s\", input: {}) }"}"#;
    let op = request_class(
        "railway",
        &http1("POST", "backboard.railway.app", "/graphql/v2", &[], body),
    );
    assert_eq!(op.class, Changes, "an unknown mutation changes");
    let body = r#"{"query":"mutation { variableDelete(input: {}) }"}"#;
    let op = request_class(
        "railway",
        &http1("POST", "backboard.railway.app", "/graphql/v2", &[], body),
    );
    assert_eq!(op.class, Changes, "the exact entry beats the *Delete glob");
}

#[test]
fn aliases_batches_fragments_and_operation_names() {
    let cases = [
        // An alias counts by its field.
        (
            r#"{"query":"mutation { keep: volumeDelete(volumeId: \"v\") }"}"#,
            Destructive,
        ),
        // The most severe field of a mutation judges it.
        (
            r#"{"query":"mutation { a: deploymentRestart(id: 1) b: serviceDelete(id: 2) }"}"#,
            Destructive,
        ),
        // A batch: any destructive operation in it.
        (
            r#"[{"query":"query { me { id } }"},{"query":"mutation { projectDelete(id: \"p\") }"}]"#,
            Destructive,
        ),
        (
            r#"[{"query":"query { me { id } }"},{"query":"{ projects { edges { node { id } } } }"}]"#,
            Reads,
        ),
        // Fragments on the mutation type, inline and named.
        (
            r#"{"query":"mutation { ... on Mutation { volumeDelete(volumeId: \"v\") } }"}"#,
            Destructive,
        ),
        (
            r#"{"query":"mutation { ...F } fragment F on Mutation { volumeDelete(volumeId: \"v\") }"}"#,
            Destructive,
        ),
        // operationName picks the operation a server runs.
        (
            r#"{"query":"query A { me { id } } mutation B { volumeDelete(volumeId: \"v\") }","operationName":"A"}"#,
            Reads,
        ),
        (
            r#"{"query":"query A { me { id } } mutation B { volumeDelete(volumeId: \"v\") }","operationName":"B"}"#,
            Destructive,
        ),
        // A persisted query names no operation.
        (
            r#"{"extensions":{"persistedQuery":{"sha256Hash":"abc"}}}"#,
            Unknown,
        ),
    ];
    for (body, class) in cases {
        let op = request_class(
            "railway",
            &http1("POST", "backboard.railway.app", "/graphql/v2", &[], body),
        );
        assert_eq!(op.class, class, "{body}: {op}");
    }
    let op = request_class(
        "railway",
        &http1(
            "POST",
            "backboard.railway.app",
            "/graphql/v2",
            &[("Content-Type", "application/graphql")],
            "mutation { volumeDelete(volumeId: \"v\") }",
        ),
    );
    assert_eq!(op.class, Destructive);
}

#[test]
fn a_truncated_body_is_destructive_when_the_destructive_field_is_visible() {
    let body = r#"{"query":"mutation VolumeDelete($id: String!) { a: deploymentRestart(id: $id) volumeDelete(volumeId: $id) { id name createdAt"#;
    let mut bytes = http1("POST", "backboard.railway.app", "/graphql/v2", &[], "");
    // The head announces the whole body; the kernel saw only this much of it.
    let head = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("\r\n\r\n", "\r\nContent-Length: 4000\r\n\r\n");
    bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    let request = parse_request(&bytes).unwrap();
    assert!(!request.body_complete);
    let op = request_class("railway", &bytes);
    assert_eq!((op.class, op.name.as_str()), (Destructive, "volumeDelete"));

    // Cut inside a mutation before anything destructive shows: more may follow.
    let cut = &bytes[..bytes.len() - body.len() + body.find("volumeDelete").unwrap()];
    assert_eq!(request_class("railway", cut).class, Unknown);
    // Cut inside a query: it only reads.
    let logs = &LOGS_BODY[..LOGS_BODY.find("severity").unwrap()];
    let head = String::from_utf8(http1(
        "POST",
        "backboard.railway.app",
        "/graphql/v2",
        &[],
        "",
    ))
    .unwrap();
    let bytes = format!(
        "{}{logs}",
        head.replace("\r\n\r\n", "\r\nContent-Length: 4000\r\n\r\n")
    );
    assert_eq!(request_class("railway", bytes.as_bytes()).class, Reads);
    // Cut before the body: what it does cannot be seen.
    let head_only = head.replace("\r\n\r\n", "\r\nContent-Length: 4000\r\n\r\n");
    assert_eq!(
        request_class("railway", head_only.as_bytes()).class,
        Unknown
    );
}

#[test]
fn a_head_cut_inside_its_headers_still_gives_method_path_and_host() {
    let bytes = http1(
        "DELETE",
        "api.vercel.com",
        "/v9/projects/my-app",
        &[("Authorization", "Bearer t")],
        "",
    );
    let cut = &bytes[..bytes.len() - 12];
    let request = parse_request(cut).unwrap();
    assert_eq!(request.method, "DELETE");
    assert_eq!(request.target, "/v9/projects/my-app");
    assert_eq!(request.host.as_deref(), Some("api.vercel.com"));
    assert!(!request.body_complete);
    // HTTP/2 cut inside its header block: the pseudo-headers come first.
    let h2 = http2("DELETE", "api.vercel.com", "/v9/projects/my-app", "");
    let cut = &h2[..PREFACE_FOR_TESTS.len() + 15 + 13 + 9 + 8];
    let request = parse_request(cut).unwrap();
    assert_eq!(request.method, "DELETE");
    assert!(parse_request(b"GET / HT").is_err());
    assert!(parse_request(b"PRI * HTTP/2").is_err());
    assert!(parse_request(b"\x16\x03\x01\x02\x00\x01").is_err());
}

#[test]
fn rest_operations() {
    let cases = [
        (
            "vercel",
            "DELETE",
            "api.vercel.com",
            "/v9/projects/my-app",
            Destructive,
        ),
        (
            "vercel",
            "GET",
            "api.vercel.com",
            "/v9/projects/my-app",
            Reads,
        ),
        (
            "vercel",
            "POST",
            "api.vercel.com",
            "/v13/deployments",
            Changes,
        ),
        (
            "vercel",
            "DELETE",
            "api.vercel.com",
            "/v2/aliases/a1",
            Changes,
        ),
        (
            "github",
            "DELETE",
            "api.github.com",
            "/repos/acme/site",
            Destructive,
        ),
        (
            "github",
            "GET",
            "api.github.com",
            "/repos/acme/site/pulls?state=open",
            Reads,
        ),
        (
            "github",
            "DELETE",
            "api.github.com",
            "/user/starred/acme/site",
            Changes,
        ),
        (
            "github",
            "POST",
            "api.github.com",
            "/repos/acme/site/transfer",
            Destructive,
        ),
        (
            "azure",
            "DELETE",
            "management.azure.com",
            "/subscriptions/s1/resourcegroups/prod?api-version=2021-04-01",
            Destructive,
        ),
        (
            "fly",
            "POST",
            "api.machines.dev",
            "/v1/apps/web/machines/m1/stop",
            Changes,
        ),
        (
            "fly",
            "DELETE",
            "api.machines.dev",
            "/v1/apps/web/machines/m1",
            Destructive,
        ),
        (
            "heroku",
            "DELETE",
            "api.heroku.com",
            "/apps/web",
            Destructive,
        ),
        (
            "digitalocean",
            "DELETE",
            "api.digitalocean.com",
            "/v2/droplets/1",
            Destructive,
        ),
        (
            "cloudflare",
            "DELETE",
            "api.cloudflare.com",
            "/client/v4/accounts/a/workers/scripts/w",
            Destructive,
        ),
        (
            "supabase",
            "DELETE",
            "api.supabase.com",
            "/v1/projects/ref",
            Destructive,
        ),
        (
            "neon",
            "DELETE",
            "console.neon.tech",
            "/api/v2/projects/p",
            Destructive,
        ),
        (
            "netlify",
            "DELETE",
            "api.netlify.com",
            "/api/v1/sites/s",
            Destructive,
        ),
        (
            "aws",
            "DELETE",
            "my-bucket.s3.us-east-1.amazonaws.com",
            "/",
            Destructive,
        ),
        (
            "aws",
            "GET",
            "s3.amazonaws.com",
            "/my-bucket?list-type=2",
            Reads,
        ),
    ];
    for (provider, method, host, path, class) in cases {
        let op = request_class(provider, &http1(method, host, path, &[], ""));
        assert_eq!(op.class, class, "{method} {path} on {provider}: {op}");
        assert_eq!(op.kind, OperationKind::Http);
    }
    let op = request_class(
        "vercel",
        &http1("DELETE", "api.vercel.com", "/v9/projects/x", &[], ""),
    );
    assert_eq!(op.to_string(), "HTTP DELETE /v9/projects/x on Vercel");
}

#[test]
fn aws_query_and_json_actions() {
    let form = [(
        "Content-Type",
        "application/x-www-form-urlencoded; charset=utf-8",
    )];
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a str,
        &'a str,
        OperationClass,
    );
    let cases: [Case; 6] = [
        (
            &form,
            "POST",
            "/",
            "Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1",
            Destructive,
        ),
        (
            &form,
            "POST",
            "/",
            "Action=DescribeInstances&Version=2016-11-15",
            Reads,
        ),
        (
            &form,
            "POST",
            "/",
            "Action=DeleteDBInstance&DBInstanceIdentifier=db",
            Destructive,
        ),
        (
            &[],
            "GET",
            "/?Action=DeleteStack&StackName=s",
            "",
            Destructive,
        ),
        (
            &form,
            "POST",
            "/",
            "Action=RunInstances&Version=2016-11-15",
            Changes,
        ),
        (
            &[
                ("X-Amz-Target", "DynamoDB_20120810.DeleteTable"),
                ("Content-Type", "application/x-amz-json-1.0"),
            ],
            "POST",
            "/",
            r#"{"TableName":"t"}"#,
            Destructive,
        ),
    ];
    for (headers, method, path, body, class) in cases {
        let op = request_class(
            "aws",
            &http1(method, "ec2.us-east-1.amazonaws.com", path, headers, body),
        );
        assert_eq!(op.class, class, "{path} {body}: {op}");
        assert_eq!(op.kind, OperationKind::AwsAction);
    }
    let op = request_class(
        "aws",
        &http1(
            "POST",
            "ec2.amazonaws.com",
            "/",
            &form,
            "Action=TerminateInstances",
        ),
    );
    assert_eq!(op.to_string(), "AWS action TerminateInstances on AWS");
    // A query request cut before its action cannot be judged.
    let mut cut = http1(
        "POST",
        "ec2.amazonaws.com",
        "/",
        &form,
        "Version=2016-11-15&Action=TerminateInstances",
    );
    cut.truncate(cut.len() - 30);
    assert_eq!(request_class("aws", &cut).class, Unknown);
}

#[test]
fn catalog_section_4_commands_are_destructive() {
    for argv in [
        "railway down",
        "railway delete",
        "railway service delete",
        "railway volume delete",
        "railway environment delete",
        "fly apps destroy web",
        "flyctl volumes destroy vol_1",
        "vercel remove my-app",
        "netlify sites:delete",
        "heroku apps:destroy -a web",
        "render services delete srv-1",
        "render postgres delete db-1",
        "doctl compute droplet delete 123",
        "hcloud server delete web",
        "wrangler delete",
        "wrangler d1 delete db",
        "wrangler r2 bucket delete b",
        "wrangler kv namespace delete --namespace-id x",
        "supabase projects delete ref",
        "supabase branches delete b",
        "neonctl projects delete p",
        "pscale database delete db",
        "pscale branch delete db br",
        "gh repo delete acme/site --yes",
        "terraform destroy",
        "terraform apply -destroy",
        "pulumi destroy",
        "pulumi stack rm dev",
        "kubectl delete pod web",
        "aws s3 rb s3://bucket --force",
        "aws s3 rm s3://bucket --recursive",
        "aws rds delete-db-instance --db-instance-identifier db",
        "aws ec2 terminate-instances --instance-ids i-1",
        "gcloud compute instances delete vm-1",
        "az group delete --name prod",
    ] {
        assert_eq!(command_class(argv), Destructive, "{argv}");
    }
}

#[test]
fn commands_that_read_and_that_change() {
    for argv in [
        "terraform plan",
        "terraform plan -destroy",
        "railway logs",
        "railway status",
        "fly status",
        "fly logs -a web",
        "gh pr list",
        "aws s3 ls",
        "aws ec2 describe-instances",
        "kubectl get pods",
        "kubectl -n prod get pods -o wide",
        "gcloud compute instances list",
        "az vm list",
        "vercel ls",
        "pulumi preview",
    ] {
        assert_eq!(command_class(argv), Reads, "{argv}");
    }
    for argv in [
        "terraform apply",
        "fly deploy",
        "railway up",
        "kubectl apply -f x.yaml",
        "aws s3 rm s3://b/key",
    ] {
        assert_eq!(command_class(argv), Changes, "{argv}");
    }
    assert_eq!(command("ls -la"), None);
    assert_eq!(command("git push"), None);
}

#[test]
fn global_flags_before_the_subcommand() {
    assert_eq!(command_class("kubectl -n x delete pod web"), Destructive);
    assert_eq!(
        command_class("kubectl --context prod --namespace=x delete ns x"),
        Destructive
    );
    assert_eq!(
        command_class("aws --region eu-west-1 ec2 terminate-instances --instance-ids i-1"),
        Destructive
    );
    assert_eq!(
        command_class("aws --profile p --region r ec2 describe-instances"),
        Reads
    );
    assert_eq!(
        command_class("terraform -chdir=infra destroy -auto-approve"),
        Destructive
    );
    assert_eq!(
        command_class("/usr/local/bin/terraform -chdir=infra plan"),
        Reads
    );
    assert_eq!(
        command_class("gcloud --project p compute instances delete vm"),
        Destructive
    );
    let op = command("terraform -chdir=infra apply -destroy -auto-approve").unwrap();
    assert_eq!(
        op.to_string(),
        "command terraform apply -destroy on HCP Terraform"
    );
    let op = command("terraform destroy").unwrap();
    assert!(op.to_string().starts_with("command terraform destroy"));
}

#[test]
fn curl_and_wget_are_judged_by_the_request_their_argv_makes() {
    // argv as curl gets it: the body is one argument.
    let argv = [
        "curl",
        "-sS",
        "-X",
        "POST",
        "https://backboard.railway.app/graphql/v2",
        "-H",
        "Content-Type: application/json",
        "-d",
        INCIDENT_BODY,
    ];
    let catalog = Catalog::new(policy());
    let op = catalog.classify_command(&argv).unwrap();
    assert_eq!(op.class, Destructive);
    assert_eq!(op.to_string(), "GraphQL mutation volumeDelete on Railway");
    let logs = [
        "curl",
        "--json",
        LOGS_BODY,
        "https://backboard.railway.com/graphql/v2",
    ];
    assert_eq!(catalog.classify_command(&logs).unwrap().class, Reads);
    // -d @file hides the body.
    let hidden = [
        "curl",
        "-d",
        "@mutation.json",
        "https://backboard.railway.app/graphql/v2",
    ];
    assert_eq!(catalog.classify_command(&hidden).unwrap().class, Unknown);
    for (argv, class) in [
        (
            "curl -XDELETE https://api.vercel.com/v9/projects/x",
            Destructive,
        ),
        (
            "curl -sSX DELETE https://api.github.com/repos/acme/site",
            Destructive,
        ),
        (
            "curl --request DELETE api.vercel.com/v9/projects/x",
            Destructive,
        ),
        ("curl -s https://api.vercel.com/v9/projects", Reads),
        ("curl -I https://api.github.com/repos/a/b", Reads),
        (
            "curl -G -d Action=TerminateInstances https://ec2.amazonaws.com/",
            Destructive,
        ),
        (
            "wget --method=DELETE https://api.vercel.com/v9/projects/x",
            Destructive,
        ),
        ("wget -q -O - https://api.vercel.com/v9/projects", Reads),
    ] {
        assert_eq!(command_class(argv), class, "{argv}");
    }
    let op = command("curl -X DELETE https://example.com/x").unwrap();
    assert_eq!(
        (op.provider, op.class),
        (None, Destructive),
        "not a provider's host"
    );
    assert_eq!(command("curl --version"), None);
}

#[test]
fn command_names_are_the_cataloged_executables() {
    let names = Catalog::new(policy()).command_names();
    for name in [
        "terraform",
        "tofu",
        "railway",
        "fly",
        "flyctl",
        "kubectl",
        "aws",
        "gcloud",
        "az",
        "gh",
        "curl",
        "wget",
    ] {
        assert!(names.contains(&name), "{name}");
    }
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
}

#[test]
fn names_of_classes_and_kinds_have_one_home() {
    for class in OperationClass::ALL {
        assert_eq!(class.name().parse::<OperationClass>(), Ok(*class));
    }
    for kind in OperationKind::ALL {
        assert_eq!(kind.name().parse::<OperationKind>(), Ok(*kind));
    }
    assert!("deletes".parse::<OperationClass>().is_err());
    assert!(Reads < Changes && Changes < Unknown && Unknown < Destructive);
    let json = serde_json::to_value(command("terraform destroy").unwrap()).unwrap();
    assert_eq!(json["kind"], "command");
    assert_eq!(json["class"], "destructive");
    assert_eq!(json["provider"]["id"], "terraform");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(request) = parse_request(&bytes) {
                        let _ = Catalog::new(policy()).classify_request("railway", &request);
        }
        let mut h2 = PREFACE_FOR_TESTS.to_vec();
        h2.extend_from_slice(&bytes);
        let _ = parse_request(&h2);
    }

    #[test]
    fn every_cut_of_the_incident_is_judged_without_panic(cut in 0usize..600, h2 in any::<bool>()) {
        let bytes = if h2 {
            http2("POST", "backboard.railway.app", "/graphql/v2", INCIDENT_BODY)
        } else {
            http1("POST", "backboard.railway.app", "/graphql/v2", &[], INCIDENT_BODY)
        };
        let cut = &bytes[..cut.min(bytes.len())];
        if let Ok(request) = parse_request(cut) {
                        let op = Catalog::new(policy()).classify_request("railway", &request);
            // Once the field name is wholly visible, the call is destructive; before, it is
            // never judged harmless.
            let visible = String::from_utf8_lossy(&request.body).contains("volumeDelete");
            if visible {
                prop_assert_eq!(op.class, Destructive);
            } else {
                prop_assert!(op.class >= Unknown, "{op}");
            }
        }
    }

    #[test]
    fn random_graphql_bodies_never_panic(body in "[{}()\\[\\]:@$!.,\"a-zA-Z0-9 #\n]{0,300}", json in any::<bool>()) {
        let body = if json {
            format!(r#"{{"query":"{}"}}"#, body.replace('"', "\\\""))
        } else {
            body
        };
        for bytes in [
            http1("POST", "backboard.railway.app", "/graphql/v2", &[], &body),
            http1("POST", "backboard.railway.app", "/graphql/v2", &[("Content-Type", "application/graphql")], &body),
        ] {
            let _ = request_class("railway", &bytes);
        }
    }

    #[test]
    fn random_argv_never_panics(args in proptest::collection::vec("[-a-zA-Z0-9=@:/. ]{0,12}", 0..8), tool in 0usize..6) {
        let program = ["curl", "wget", "kubectl", "aws", "terraform", "gcloud"][tool];
        let mut argv = vec![program.to_string()];
        argv.extend(args);
                let _ = Catalog::new(policy()).classify_command(&argv);
    }
}
