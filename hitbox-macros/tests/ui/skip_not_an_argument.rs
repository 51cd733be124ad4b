use hitbox_backend::{Cache, cached};

#[cached(cache = cache, skip = [pool])]
async fn user_name(cache: &Cache, id: u64) -> String {
    format!("user {id}")
}

fn main() {}
