use hitbox_backend::{Cache, cached};

#[cached(cache = cache, policy = forever)]
async fn square(cache: &Cache, n: u64) -> u64 {
    n * n
}

fn main() {}
