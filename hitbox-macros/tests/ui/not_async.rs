use hitbox_backend::{Cache, cached};

#[cached(cache = cache)]
fn square(cache: &Cache, n: u64) -> u64 {
    n * n
}

fn main() {}
