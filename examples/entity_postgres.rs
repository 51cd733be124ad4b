//! A Postgres-shaped repository for the entity cache: what a real service
//! would write, with `ANY($1)` for many ids and an update through
//! `update_then_invalidate`.
//!
//! **Compiled, not run** by the project's tests: it needs a Postgres that
//! the test machine does not have. The same cache code runs against SQLite
//! in `entity_users` (an example) and in hitbox-backend's
//! `tests/entity_sqlite.rs`. To run it against your own database:
//!
//! ```sh
//! # CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT NOT NULL);
//! DATABASE_URL=postgres://user:password@localhost/app cargo run --example entity_postgres
//! ```

use hitbox_backend::Cache;
use hitbox_backend::entity::{Entity, EntityCache, Repository};
use hitbox_core::Strategy;
use hitbox_moka::MokaBackend;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: i64,
    name: String,
}

impl Entity for User {
    type Id = i64;
    const NAMESPACE: &'static str = "users";
    // Bump when `User` changes shape: entries of the old shape are then
    // never read.
    const VERSION: u32 = 1;

    fn id(&self) -> i64 {
        self.id
    }
}

/// The `users` table of a Postgres database.
struct PgUsers {
    pool: PgPool,
}

impl Repository<User> for PgUsers {
    type Error = sqlx::Error;

    async fn load(&self, id: &i64) -> Result<Option<User>, sqlx::Error> {
        let row: Option<(i64, String)> = sqlx::query_as("SELECT id, name FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(id, name)| User { id, name }))
    }

    /// One query for every miss: `= ANY($1)` takes the ids as one array.
    async fn load_many(&self, ids: &[i64]) -> Result<Vec<User>, sqlx::Error> {
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM users WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(id, name)| User { id, name }).collect())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL to a Postgres database")?;
    let db = PgUsers {
        pool: PgPool::connect(&url).await?,
    };
    let users = EntityCache::<User>::new(Cache::new(MokaBackend::new(64 << 20)));

    let some = users.get_many(&db, &[1, 2, 3]).await?;
    println!("{some:?}");

    // Rename, then drop the cached copy (a load racing the update does not
    // store what it read).
    let update = sqlx::query("UPDATE users SET name = $1 WHERE id = $2")
        .bind("Ada Lovelace")
        .bind(1_i64)
        .execute(&db.pool);
    users.update_then_invalidate(&1, update).await?;

    // Read around the cache for once.
    let fresh = users.get_with(&db, &1, Strategy::Bypass).await?;
    println!("{fresh:?}");
    Ok(())
}
