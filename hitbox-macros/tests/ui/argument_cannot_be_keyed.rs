use hitbox_backend::{Cache, cached};

struct Db;

#[cached(cache = cache)]
async fn user_name(cache: &Cache, db: &Db, id: u64) -> String {
    let _ = db;
    format!("user {id}")
}

fn main() {}
