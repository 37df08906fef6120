//! Property-based fuzzing of what parses outside input: the token-answer
//! parser and outcome classifier, the `Retry-After` parser, and the configuration
//! loader. Each must never panic, and what it accepts must be safe to use. proptest runs
//! 256 cases per property by default (bounded for CI); `PROPTEST_CASES=100000` runs
//! longer. A failing case is saved under proptest-regressions/ and replayed first on
//! every later run, which makes it a regression test once committed.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use tokend::oauth::classify;
use tokend::oauth::http::BodyError;

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(Into::into),
        any::<i64>().prop_map(Into::into),
        any::<f64>().prop_map(
            |f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)
        ),
        ".{0,40}".prop_map(serde_json::Value::String),
        "[ -~]{0,40}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A token answer whose fields each may be right, wrong, or missing.
fn token_answer() -> impl Strategy<Value = Vec<u8>> {
    let field = |good: serde_json::Value| {
        prop_oneof![Just(Some(good)), json_value().prop_map(Some), Just(None)]
    };
    (
        field("blnk_at_x".into()),
        field("Bearer".into()),
        field(3600.into()),
        field("blnk_rt_y".into()),
        field("a b".into()),
    )
        .prop_map(|(at, tt, exp, rt, scope)| {
            let mut o = serde_json::Map::new();
            for (k, v) in [
                ("access_token", at),
                ("token_type", tt),
                ("expires_in", exp),
                ("refresh_token", rt),
                ("scope", scope),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            serde_json::to_vec(&serde_json::Value::Object(o)).unwrap()
        })
}

/// What an access token must be to be published: no character an output format cannot
/// carry.
fn safe_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// What RFC 6749 (A.17) allows in a refresh token, which goes back to the server and
/// into the state, never to an output: one or more VSCHAR.
fn rfc_refresh_token(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

proptest! {
    #[test]
    fn classify_never_panics_on_bytes(status in 0u16..1000, body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = classify(status, None, Ok(body));
        let _ = classify(status, Some(Duration::from_secs(1)), Err(BodyError::TooLarge));
    }

    #[test]
    fn accepted_answers_are_safe_to_publish(status in 200u16..300, body in token_answer()) {
        match classify(status, None, Ok(body)) {
            Ok(a) => {
                use secrecy::ExposeSecret;
                prop_assert!(safe_token(a.access_token.expose_secret()));
                prop_assert!(a.refresh_token.as_ref().is_none_or(|t| rfc_refresh_token(t.expose_secret())));
                prop_assert!(a.token_type.eq_ignore_ascii_case("bearer"));
                prop_assert!(a.expires_in.is_none_or(|d| d > Duration::ZERO && d <= Duration::from_secs(10 * 365 * 86_400)));
            }
            Err(f) => {
                // A rotated refresh token is kept only if RFC 6749 allows it.
                use secrecy::ExposeSecret;
                prop_assert!(f.rotated.as_ref().is_none_or(|t| rfc_refresh_token(t.expose_secret())));
                prop_assert!(!f.detail.contains('\n'));
            }
        }
    }

    #[test]
    fn error_answers_are_one_line(status in 400u16..600, body in json_value()) {
        let f = classify(status, None, Ok(serde_json::to_vec(&body).unwrap())).unwrap_err();
        prop_assert!(!f.detail.chars().any(char::is_control), "{:?}", f.detail);
    }

    #[test]
    fn retry_after_is_bounded(value in ".{0,64}") {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        if let Some(d) = tokend::oauth::answer::parse_retry_after(&value, now) {
            prop_assert!(d <= tokend::oauth::answer::RETRY_AFTER_CAP);
        }
    }

    #[test]
    fn retry_after_numbers_and_dates(secs in any::<u64>(), date_offset in -100_000i64..100_000) {
        use tokend::oauth::answer::{RETRY_AFTER_CAP, parse_retry_after};
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Delay-seconds: that many seconds, capped.
        let expected = Duration::from_secs(secs).min(RETRY_AFTER_CAP);
        prop_assert_eq!(parse_retry_after(&secs.to_string(), now), Some(expected));
        prop_assert_eq!(parse_retry_after(&format!(" {secs}\t"), now), Some(expected));
        // An HTTP-date: the time until then (none once past), capped.
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs((1_800_000_000 + date_offset) as u64);
        let expected = Duration::from_secs(date_offset.max(0) as u64).min(RETRY_AFTER_CAP);
        prop_assert_eq!(parse_retry_after(&httpdate::fmt_http_date(at), now), Some(expected));
        // Anything else is no Retry-After at all.
        prop_assert_eq!(parse_retry_after(&format!("{secs}s"), now), None);
        prop_assert_eq!(parse_retry_after(&format!("-{secs}"), now), None);
    }

    #[test]
    fn config_loader_never_panics_and_errors_are_one_line(text in ".{0,300}") {
        if let Err(e) = tokend::config::load_from_str(&text, "fuzz.toml", []) {
            prop_assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn config_values_of_any_type_are_refused_cleanly(
        key in prop::sample::select(vec![
            "token_url", "client_id", "client_secret", "client_auth", "refresh_token", "scope",
            "state_file", "issuer", "authorize_url", "redirect_uri", "refresh_token_max_age",
            "warn_before", "publish_dir", "refresh.at", "refresh.jitter", "refresh.min_remaining",
            "retry.initial", "retry.max", "http.timeout", "http.ca_file", "outputs", "on_rotate",
        ]),
        value in json_value(),
        env_value in ".{0,40}",
    ) {
        let base = "state_dir = \"/tmp/fuzz\"\n[credentials.c]\nclient_id = \"id\"\nclient_secret = \"s\"\n";
        let (table, leaf) = match key.split_once('.') {
            Some((t, l)) => (format!("[credentials.c.{t}]\n"), l.to_owned()),
            None => (String::new(), key.to_owned()),
        };
        // The value as TOML, when it has a TOML form.
        if let Ok(v) = toml::Value::try_from(&value) {
            let text = format!("{base}{table}{leaf} = {v}\n");
            if let Err(e) = tokend::config::load_from_str(&text, "fuzz.toml", []) {
                prop_assert!(!e.to_string().contains('\n'), "{e}");
            }
        }
        // And as an environment variable.
        let var = format!("TOKEND_CREDENTIALS__C__{}", key.replace('.', "__").to_uppercase());
        if let Err(e) = tokend::config::load_from_str(base, "fuzz.toml", [(var, env_value)]) {
            prop_assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
