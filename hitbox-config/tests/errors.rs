//! Every error path: the message names the file, the line, the column and
//! what was expected, and nothing panics.

use std::io::Write;

use hitbox_config::{Config, ErrorKind};

fn toml_error(text: &str) -> hitbox_config::Error {
    Config::from_toml_str("app.toml", text).unwrap_err()
}

const MOKA: &str = "[[tiers]]\nmoka = { max_bytes = \"1 MiB\" }\n";

#[test]
fn unknown_field() {
    let error = toml_error("[[tiers]]\nmoka = { max_bytes = \"1 MiB\", max_bites = 3 }\n");
    assert_eq!(error.kind(), ErrorKind::Parse);
    assert_eq!(
        error.to_string(),
        "app.toml:2:31: unknown field `max_bites`, expected one of `max_bytes`, `max_entry_size`, `label`"
    );
    let error = toml_error(&format!("{MOKA}[[rules]]\nnamespace = \"a\"\nttl = \"1s\"\n"));
    assert_eq!(error.line_column(), Some((5, 1)));
    assert!(
        error
            .message()
            .starts_with("unknown field `ttl`, expected one of `when`"),
        "{error}"
    );
    let error = toml_error(&format!("{MOKA}[cahce]\nname = \"x\"\n"));
    assert_eq!(error.line_column(), Some((3, 2)));
    assert!(error.message().starts_with("unknown field `cahce`"), "{error}");
}

#[test]
fn wrong_type() {
    let error = toml_error(&format!("{MOKA}[layer]\nx_cache_header = \"yes\"\n"));
    assert_eq!(
        error.to_string(),
        "app.toml:4:18: invalid type: string \"yes\", expected a boolean"
    );
    let error = toml_error("[[tiers]]\nmoka = { max_bytes = true }\n");
    assert_eq!(error.line_column(), Some((2, 22)));
    assert!(error.message().contains("expected a size"), "{error}");
}

#[test]
fn bad_duration() {
    let error = toml_error(&format!("{MOKA}[[rules]]\npolicy = {{ ttl = \"30 seconds\" }}\n"));
    assert_eq!(
        error.to_string(),
        "app.toml:4:18: invalid duration \"30 seconds\": expected a duration with its unit, such as \"250ms\", \"30s\", \"5m\", \"1h\" or \"2d\""
    );
    // A bare number could mean seconds or milliseconds: refused.
    let error = toml_error(&format!("{MOKA}[layer]\nlock_timeout = 5\n"));
    assert_eq!(error.line_column(), Some((4, 16)));
    assert!(
        error
            .message()
            .starts_with("invalid type: integer `5`, expected a duration with its unit"),
        "{error}"
    );
}

#[test]
fn inline_key_is_refused_with_the_reason() {
    let error = toml_error(
        "[[tiers]]\nmemory = {}\n[tiers.stages.encryption]\nkey_env = \"K\"\nkey = \"00112233\"\n",
    );
    assert_eq!(error.line_column(), Some((5, 1)));
    assert!(
        error
            .message()
            .starts_with("an encryption key written in the config file is refused"),
        "{error}"
    );
    assert!(error.message().contains("version control"), "{error}");
    assert!(
        error.message().contains("key_env") && error.message().contains("key_file"),
        "{error}"
    );
    assert!(
        !error.to_string().contains("00112233"),
        "the key is never echoed: {error}"
    );
    // Whatever its type, and under the other names people give it.
    let error = toml_error("[[tiers]]\nmemory = {}\nstages = { encryption = { master_key = 42 } }\n");
    assert_eq!(error.line_column(), Some((3, 25)));
    assert!(
        error
            .message()
            .starts_with("an encryption key written in the config file is refused"),
        "{error}"
    );
    // A Redis password too.
    let error = toml_error("[[tiers]]\nredis = { url = \"redis://h:1\", password = \"hunter2\" }\n");
    assert_eq!(error.line_column(), Some((2, 32)));
    assert!(error.message().contains("password_env"), "{error}");
    assert!(!error.to_string().contains("hunter2"));
}

#[test]
fn bad_redis_url() {
    let error = toml_error("[[tiers]]\nredis = { url = \"http://cache:6379\" }\n");
    assert_eq!(error.line_column(), Some((2, 11)));
    assert!(
        error
            .message()
            .starts_with("invalid Redis URL: unknown scheme \"http\"; expected redis://"),
        "{error}"
    );
    let error = toml_error("[[tiers]]\nredis = { url = \"redis://cache:99999\" }\n");
    assert!(error.message().contains("the port \"99999\""), "{error}");
    let error = toml_error("[[tiers]]\n[tiers.redis]\nlabel = \"l2\"\nurl = \"redis-sentinel://s:26379\"\n");
    assert_eq!(
        error.to_string(),
        "app.toml:4:1: invalid Redis URL: a sentinel URL needs ?sentinelServiceName=NAME"
    );
    let error = toml_error("[[tiers]]\nredis = { mode = \"cluster\", nodes = [\"a:1\", \"b\"] }\n");
    assert_eq!(error.line_column(), Some((2, 29)));
    assert!(
        error
            .message()
            .starts_with("invalid Redis node \"b\": expected \"HOST:PORT\""),
        "{error}"
    );
}

#[test]
fn zero_redis_timeouts_are_refused_at_their_field() {
    for field in [
        "read_timeout",
        "write_timeout",
        "invalidate_timeout",
        "purge_timeout",
    ] {
        let line = format!("redis = {{ url = \"redis://h:1\", {field} = \"0s\" }}");
        let column = line.find(field).unwrap() + 1;
        let error = toml_error(&format!("[[tiers]]\n{line}\n"));
        assert_eq!(error.line_column(), Some((2, column)), "{error}");
        assert_eq!(error.message(), format!("`{field}` must be longer than zero"));
    }
    // A purge timeout off its default is taken.
    let config = Config::from_toml_str(
        "app.toml",
        "[[tiers]]\nredis = { url = \"redis://h:1\", purge_timeout = \"250ms\" }\n",
    )
    .unwrap();
    let hitbox_config::model::TierKind::Redis(redis) = &config.model().tiers[0].kind else {
        panic!("a Redis tier");
    };
    assert_eq!(
        redis.purge_timeout.map(|t| t.0),
        Some(std::time::Duration::from_millis(250))
    );
}

#[tokio::test]
async fn missing_environment_variable() {
    let text = "[[tiers]]\nmemory = {}\n[tiers.stages]\nencryption = { key_env = \"HITBOX_CONFIG_TEST_UNSET_KEY\" }\n";
    let config = Config::from_toml_str("app.toml", text).unwrap();
    let error = config.build().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Build);
    assert_eq!(
        error.to_string(),
        "app.toml:4:27: the environment variable HITBOX_CONFIG_TEST_UNSET_KEY that should hold the encryption key is not set"
    );
    let text = "[[tiers]]\nredis = { url = \"redis://127.0.0.1:1\", password_env = \"HITBOX_CONFIG_TEST_UNSET_PASSWORD\" }\n";
    let error = Config::from_toml_str("app.toml", text)
        .unwrap()
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.line_column(), Some((2, 56)));
    assert!(
        error.message().contains("HITBOX_CONFIG_TEST_UNSET_PASSWORD"),
        "{error}"
    );
}

#[tokio::test]
async fn unreadable_or_bad_key_file() {
    let dir = std::env::temp_dir().join(format!("hitbox-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("no-such-key");
    let text = format!(
        "[[tiers]]\nmemory = {{}}\n\n[tiers.stages]\nencryption = {{ key_file = '{}' }}\n",
        missing.display()
    );
    let error = Config::from_toml_str("app.toml", &text)
        .unwrap()
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.line_column(), Some((5, 28)));
    assert!(
        error
            .message()
            .starts_with(&format!("cannot read the key file {}: ", missing.display())),
        "{error}"
    );

    // A file that holds something else than a key.
    let short = dir.join("short-key");
    std::fs::File::create(&short)
        .unwrap()
        .write_all(b"abcd\n")
        .unwrap();
    let text = format!(
        "[[tiers]]\nmemory = {{}}\nstages = {{ encryption = {{ key_file = '{}' }} }}\n",
        short.display()
    );
    let error = Config::from_toml_str("app.toml", &text)
        .unwrap()
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.line_column(), Some((3, 39)));
    assert!(
        error
            .message()
            .contains("holds neither 64 hex digits nor 32 raw bytes"),
        "{error}"
    );

    // And the right one builds.
    let good = dir.join("good-key");
    std::fs::File::create(&good)
        .unwrap()
        .write_all(format!("{}\n", "ab".repeat(32)).as_bytes())
        .unwrap();
    let text = format!(
        "[[tiers]]\nmemory = {{}}\nstages = {{ encryption = {{ key_file = '{}' }} }}\n",
        good.display()
    );
    Config::from_toml_str("app.toml", &text)
        .unwrap()
        .build()
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn whole_file_checks() {
    let error = toml_error("[cache]\nname = \"x\"\n");
    assert_eq!(error.to_string(), "app.toml:1:1: missing field `tiers`");
    let error = toml_error("tiers = []\n");
    assert_eq!(
        error.to_string(),
        "app.toml:1:1: the configuration needs at least one tier"
    );
    let error = toml_error(&format!("{MOKA}[[rules]]\n\n[standards]\nkeep_stale = \"1h\"\n"));
    assert_eq!(error.line_column(), Some((5, 1)));
    assert!(
        error
            .message()
            .starts_with("`standards` and `rules` cannot both be given"),
        "{error}"
    );
    let error = toml_error(&format!("{MOKA}[layer]\ndistributed_lock = {{}}\n"));
    assert_eq!(error.line_column(), Some((4, 1)));
    assert!(error.message().contains("has none"), "{error}");
    let error = toml_error("[[tiers]]\nmoka = { max_bytes = 1 }\nmemory = {}\n");
    assert_eq!(
        error.to_string(),
        "app.toml:1:1: a tier names exactly one of `memory`, `moka` or `redis`"
    );
    let error = toml_error("[[tiers]\n");
    assert_eq!(error.line_column(), Some((1, 9)));
}

#[test]
fn other_values_checked_while_parsing() {
    let cases: &[(&str, (usize, usize), &str)] = &[
        (
            "[[rules]]\nkey = [\"method\", { quer = [\"a\"] }]\n",
            (4, 20),
            "unknown variant `quer`",
        ),
        (
            "[[rules]]\nwhen = { headers = [{ name = \"bad name\", present = true }] }\n",
            (4, 30),
            "invalid header name \"bad name\"",
        ),
        (
            "[[rules]]\nwhen = { path_pattern = \"/users/{\" }\n",
            (4, 25),
            "invalid path pattern",
        ),
        (
            "[[rules]]\nmethods = [\"G T\"]\n",
            (4, 11),
            "invalid HTTP method \"G T\"",
        ),
        (
            "[[rules]]\npolicy = { stale_if_error = \"1m\" }\n",
            (4, 10),
            "a policy needs a `ttl` or a `preset`",
        ),
        (
            "[[rules]]\nwhen = { query = [{ name = \"a\", present = true, equals = \"b\" }] }\n",
            (4, 18),
            "a query condition has exactly one of",
        ),
        ("[cache]\nformat = \"yaml\"\n", (4, 10), "unknown format \"yaml\""),
        (
            "[[tiers]]\nmemory = {}\nstages = { compression = \"lz4\", level = 3 }\n",
            (5, 33),
            "`level` is for `compression = \"zstd\"`",
        ),
        (
            "[[rules]]\nmax_body_size = \"1 mb\"\n",
            (4, 17),
            "invalid size \"1 mb\"",
        ),
    ];
    for (tail, place, start) in cases {
        let error = toml_error(&format!("{MOKA}{tail}"));
        assert_eq!(error.line_column(), Some(*place), "{error}");
        assert!(error.message().starts_with(start), "{error}");
    }
}

#[test]
fn yaml_errors_name_the_place_too() {
    let error = Config::from_yaml_str(
        "app.yaml",
        "tiers:\n  - moka:\n      max_bytes: 1024\n      sise: 3\n",
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "app.yaml:4:7: tiers[0].moka: unknown field `sise`, expected one of `max_bytes`, `max_entry_size`, `label`"
    );
    let error = Config::from_yaml_str(
        "app.yaml",
        "tiers:\n  - memory: {}\nrules:\n  - policy:\n      ttl: 30 seconds\n",
    )
    .unwrap_err();
    assert_eq!(error.line_column(), Some((5, 12)));
    assert!(
        error.message().contains("invalid duration \"30 seconds\""),
        "{error}"
    );
    let error = Config::from_yaml_str(
        "app.yaml",
        "tiers:\n  - memory: {}\n    stages:\n      encryption:\n        key: abc\n",
    )
    .unwrap_err();
    assert_eq!(error.line_column(), Some((5, 9)));
    assert!(
        error
            .message()
            .contains("encryption key written in the config file is refused"),
        "{error}"
    );
    let error = Config::from_yaml_str("app.yaml", "tiers:\n  - redis:\n      url: http://x\n").unwrap_err();
    assert_eq!(error.line_column(), Some((3, 7)));
    let error = Config::from_yaml_str(
        "app.yaml",
        "tiers:\n  - memory: {}\nlayer:\n  x_cache_header: yes please\n",
    )
    .unwrap_err();
    assert_eq!(error.line_column(), Some((4, 19)));
    assert!(error.message().contains("expected a boolean"), "{error}");
}

#[test]
fn files() {
    let error = Config::from_file("/nonexistent/hitbox.toml").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Read);
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/hitbox.toml: cannot read the config file: "),
        "{error}"
    );
    let error = Config::from_file("hitbox.ini").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownFormat);
    assert!(error.message().contains(".toml, .yaml or .yml"), "{error}");
}

const TWO_TIERS: &str =
    "[[tiers]]\nmoka = { max_bytes = \"1 MiB\" }\n[[tiers]]\nredis = { url = \"redis://127.0.0.1:1\" }\n";

#[test]
fn bus_errors() {
    // No Redis tier to run over.
    let error = toml_error(&format!("{MOKA}\n[bus]\nchannel = \"shop\"\n"));
    assert_eq!(
        error.to_string(),
        "app.toml:4:1: `[bus]` runs over a Redis tier, and this configuration has none"
    );
    // Nothing in front of the Redis tier to keep in step.
    let error = toml_error("[[tiers]]\nredis = { url = \"redis://127.0.0.1:1\" }\n[bus]\n");
    assert_eq!(error.line_column(), Some((3, 1)));
    assert!(
        error
            .message()
            .starts_with("`[bus]` keeps the tiers in front of the first Redis tier in step"),
        "{error}"
    );
    let cases: &[(&str, (usize, usize), &str)] = &[
        (
            "[bus]\nchanel = \"shop\"\n",
            (6, 1),
            "unknown field `chanel`, expected one of `channel`, `origin_env`",
        ),
        (
            "[bus]\nretry_interval = \"100ms\"\nchannel = \"\"\n",
            (7, 1),
            "invalid channel \"\": expected a non-empty name",
        ),
        (
            "[bus]\ndegraded_ttl = \"0s\"\n",
            (6, 1),
            "`degraded_ttl` must be longer than zero",
        ),
        (
            "[bus]\npublish_timeout = \"soon\"\n",
            (6, 19),
            "invalid duration \"soon\"",
        ),
        (
            "[bus]\npurge_on_resubscribe = \"yes\"\n",
            (6, 24),
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[bus]\norigin = \"web-1\"\n",
            (6, 1),
            "an origin id written in the config file is refused",
        ),
        (
            "[bus]\norigin_env = \"\"\n",
            (6, 1),
            "`origin_env` names an environment variable",
        ),
    ];
    for (tail, place, start) in cases {
        let error = toml_error(&format!("{TWO_TIERS}{tail}"));
        assert_eq!(error.kind(), ErrorKind::Parse, "{error}");
        assert_eq!(error.line_column(), Some(*place), "{error}");
        assert!(error.message().starts_with(start), "{error}");
    }
    // And in YAML.
    let error = Config::from_yaml_str(
        "app.yaml",
        "tiers:\n  - moka: { max_bytes: 1024 }\n  - redis: { url: \"redis://127.0.0.1:1\" }\nbus:\n  channel: shop\n  retry_interval: 0s\n",
    )
    .unwrap_err();
    assert_eq!(error.line_column(), Some((6, 3)), "{error}");
    assert!(
        error
            .message()
            .contains("`retry_interval` must be longer than zero"),
        "{error}"
    );
}
