//! Packaging checks that need no Docker engine or cluster: the Dockerfile's final image.

/// The instructions of each stage of the Dockerfile, continuation lines joined.
fn stages() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<Vec<String>> = Vec::new();
    for line in joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if line.to_ascii_uppercase().starts_with("FROM ") {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("a FROM first")
            .push(line.to_owned());
    }
    stages
}

#[test]
fn final_image_has_no_shell_runs_as_non_root_and_has_ca_certificates() {
    let stages = stages();
    let last = stages.last().unwrap();
    let from = &last[0];
    let shellless = [
        "gcr.io/distroless/static",
        "gcr.io/distroless/static-debian12",
        "scratch",
    ];
    let image = from.split_whitespace().nth(1).unwrap();
    let base = image.split([':', '@']).next().unwrap();
    assert!(
        shellless.contains(&base),
        "the final stage must be distroless static or scratch, not {image}"
    );
    assert!(
        !last
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("RUN ")),
        "a RUN in the final stage needs a shell: {last:?}"
    );
    let user = last
        .iter()
        .rev()
        .find(|l| l.to_ascii_uppercase().starts_with("USER "))
        .expect("a USER in the final stage");
    let uid = user[5..].trim().split(':').next().unwrap();
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER must be numeric: {user}"));
    assert_ne!(uid, 0, "the final image runs as root");
    if base == "scratch" {
        assert!(
            last.iter().any(|l| l.contains("ca-certificates")),
            "scratch needs CA certificates copied in"
        );
    }
    let entry = last
        .iter()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("an ENTRYPOINT");
    assert!(
        entry.contains("[\"/usr/local/bin/tokend\", \"run\"]"),
        "{entry}"
    );
}

#[test]
fn the_builder_asks_for_a_static_locked_release_build_and_the_image_copies_it() {
    let stages = stages();
    let build = stages
        .iter()
        .flatten()
        .find(|l| l.starts_with("RUN cargo build"))
        .expect("a cargo build in the builder stage");
    for part in [
        "--release",
        "--locked",
        "--target x86_64-unknown-linux-musl",
    ] {
        assert!(build.contains(part), "{build} lacks {part}");
    }
    let copy = stages
        .last()
        .unwrap()
        .iter()
        .find(|l| l.starts_with("COPY --from="))
        .unwrap();
    assert!(
        copy.contains("target/x86_64-unknown-linux-musl/release/tokend"),
        "{copy}"
    );
}
