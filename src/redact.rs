//! Text that may hold a token or a secret by mistake (a server's error description, a
//! value put into the wrong configuration key) loses every long run of token
//! characters before it is shown: random text holds digits or both cases of letters,
//! which words and snake_case names do not.

/// Runs of token characters at least this long, and random-looking, are taken for a
/// token or a secret.
const TOKEN_RUN: usize = 16;

/// `text` with every random-looking run of at least [`TOKEN_RUN`] characters of
/// `[A-Za-z0-9._~+=-]` and `extra` replaced by `instead`.
pub fn token_runs(text: &str, extra: &str, instead: &str) -> String {
    let token_char =
        |c: char| c.is_ascii_alphanumeric() || "._~+=-".contains(c) || extra.contains(c);
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let has = |f: fn(&char) -> bool| run.chars().any(|c| f(&c));
        let random = has(char::is_ascii_digit)
            || (has(char::is_ascii_uppercase) && has(char::is_ascii_lowercase));
        if run.len() >= TOKEN_RUN && random {
            out.push_str(instead);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if token_char(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::token_runs;

    #[test]
    fn random_runs_go_words_and_names_stay() {
        let r = |t: &str| token_runs(t, "/", "[redacted]");
        assert_eq!(
            r("unknown_client_authentication failed"),
            "unknown_client_authentication failed"
        );
        assert_eq!(
            r("token blnk_rt_0a1b2c3d4e5f6a7b8c9d here"),
            "token [redacted] here"
        );
        assert_eq!(r("Basic dGVzdDpzZWNyZXQ/Zm9vYmFy"), "Basic [redacted]");
        assert_eq!(r("short rt_9ab"), "short rt_9ab");
        // Without "/" among the token characters, a path is cut at its slashes.
        assert_eq!(
            token_runs("/tmp/.tmpRZbNxm/out/t", "", "[x]"),
            "/tmp/.tmpRZbNxm/out/t"
        );
    }
}
