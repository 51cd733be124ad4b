use hitbox_backend::{Cache, cached};

#[cached(cache = cache, key = "user:{user_id}")]
async fn user_name(cache: &Cache, id: u64) -> String {
    format!("user {id}")
}

fn main() {}
