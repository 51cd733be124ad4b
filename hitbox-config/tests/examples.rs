//! Every file in examples/config/ parses, so that the examples never rot.

use hitbox_config::{Config, Format};

#[test]
fn every_example_config_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        assert!(
            Format::from_path(&path).is_some(),
            "{} is neither TOML nor YAML",
            path.display()
        );
        if let Err(error) = Config::from_file(&path) {
            panic!("{error}");
        }
        seen += 1;
    }
    assert!(seen >= 4, "the examples are missing from {}", dir.display());
}

/// The examples that need no Redis and no secret build, and the TOML and
/// YAML spellings of the demo say the same thing.
#[tokio::test]
async fn the_demo_examples_build_and_agree() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let toml = Config::from_file(dir.join("demo.toml")).unwrap();
    let yaml = Config::from_file(dir.join("demo.yaml")).unwrap();
    assert_eq!(
        format!("{:?}", toml.model().rules),
        format!("{:?}", yaml.model().rules)
    );
    for name in ["demo.toml", "demo.yaml", "proxy.toml", "proxy.yaml"] {
        Config::from_file(dir.join(name)).unwrap().build().await.unwrap();
    }
}
