use hitbox_backend::cached;

#[cached(key = "n:{n}")]
async fn square(n: u64) -> u64 {
    n * n
}

fn main() {}
