use hitbox_config::Config;
#[test]
fn explore() {
    let cases: &[(&str, &str)] = &[
        ("unknown", "[[tiers]]\nmoka = { max_bytes = \"1 MiB\", sise = 3 }\n"),
        ("unknown-top", "[[tiers]]\nmoka = { max_bytes = 1024 }\n[cahce]\nname = \"x\"\n"),
        ("wrongtype", "[[tiers]]\nmoka = { max_bytes = 1024 }\n[layer]\nx_cache_header = \"yes\"\n"),
        ("badduration", "[[tiers]]\nmoka = { max_bytes = 1024 }\n[[rules]]\npolicy = { ttl = \"30 seconds\" }\n"),
        ("intduration", "[[tiers]]\nmoka = { max_bytes = 1024 }\n[[rules]]\npolicy = { ttl = 30 }\n"),
        ("inline", "[[tiers]]\nmoka = { max_bytes = 1024 }\nstages = { encryption = { key = \"00\" } }\n"),
        ("inline2", "[[tiers]]\nmoka = { max_bytes = 1024 }\n[tiers.stages.encryption]\nkey_env = \"A\"\nkey = \"00\"\n"),
        ("badurl", "[[tiers]]\nredis = { url = \"http://x\" }\n"),
        ("twokinds", "[[tiers]]\nmoka = { max_bytes = 1024 }\nmemory = {}\n"),
        ("notiers", "[cache]\nname = \"x\"\n"),
        ("keypart", "[[tiers]]\nmemory = {}\n[[rules]]\nkey = [\"method\", { quer = [\"a\"] }]\n"),
        ("refill", "[[tiers]]\nmemory = {}\n[composition]\nrefill = { one_in = 3 }\n"),
    ];
    for (name, text) in cases {
        match Config::from_toml_str("c.toml", text) {
            Ok(_) => println!("{name}: OK"),
            Err(e) => println!("{name}: {e}"),
        }
    }
    let yaml: &[(&str, &str)] = &[
        ("unknown", "tiers:\n  - moka:\n      max_bytes: 1024\n      sise: 3\n"),
        ("badduration", "tiers:\n  - memory: {}\nrules:\n  - policy:\n      ttl: 30 seconds\n"),
        ("inline", "tiers:\n  - memory: {}\n    stages:\n      encryption:\n        key: \"00\"\n"),
        ("badurl", "tiers:\n  - redis:\n      url: http://x\n"),
        ("wrongtype", "tiers:\n  - memory: {}\nlayer:\n  x_cache_header: yes please\n"),
    ];
    for (name, text) in yaml {
        match Config::from_yaml_str("c.yaml", text) {
            Ok(_) => println!("yaml {name}: OK"),
            Err(e) => println!("yaml {name}: {e}"),
        }
    }
}
