//! An axum service that reads users through the entity cache, from SQLite
//! (in memory, embedded: nothing to install).
//!
//! ```sh
//! cargo run --example entity_users          # listens on 127.0.0.1:3002
//! curl -i localhost:3002/users/1            # loaded from SQLite, then cached
//! curl -i localhost:3002/users/1            # from the cache
//! curl -i 'localhost:3002/users?ids=1,2,3,9'   # one cache read, one query for the misses
//! curl -i -X PUT localhost:3002/users/1 -d 'Ada Lovelace'   # update, then invalidate
//! curl -i localhost:3002/users/1            # loaded again: the new name
//! ```
//!
//! Each response says how many queries the database has answered so far,
//! so the effect of the cache is visible.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use hitbox_backend::entity::{Entity, EntityCache, Repository};
use hitbox_backend::{Cache, Compose};
use hitbox_core::{CachePolicy, EntryOptions};
use hitbox_moka::MokaBackend;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: i64,
    name: String,
}

impl Entity for User {
    type Id = i64;
    const NAMESPACE: &'static str = "users";

    fn id(&self) -> i64 {
        self.id
    }
}

/// The users table.
struct Users {
    pool: SqlitePool,
    queries: AtomicU64,
}

impl Repository<User> for Users {
    type Error = sqlx::Error;

    async fn load(&self, id: &i64) -> Result<Option<User>, sqlx::Error> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let row: Option<(i64, String)> = sqlx::query_as("SELECT id, name FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(id, name)| User { id, name }))
    }

    async fn load_many(&self, ids: &[i64]) -> Result<Vec<User>, sqlx::Error> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let sql = format!(
            "SELECT id, name FROM users WHERE id IN ({})",
            vec!["?"; ids.len()].join(", ")
        );
        let mut query = sqlx::query_as::<_, (i64, String)>(&sql);
        for id in ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(id, name)| User { id, name }).collect())
    }
}

#[derive(Clone)]
struct App {
    db: Arc<Users>,
    users: EntityCache<User>,
}

impl App {
    fn queries(&self) -> u64 {
        self.db.queries.load(Ordering::Relaxed)
    }
}

fn failed(error: sqlx::Error) -> (StatusCode, String) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("database error: {error}\n"),
    )
}

async fn user(State(app): State<App>, Path(id): Path<i64>) -> Result<String, (StatusCode, String)> {
    match app.users.get(&*app.db, &id).await.map_err(failed)? {
        Some(user) => Ok(format!("{} (queries so far: {})\n", user.name, app.queries())),
        None => Err((StatusCode::NOT_FOUND, format!("no user {id}\n"))),
    }
}

#[derive(Deserialize)]
struct Ids {
    ids: String,
}

async fn users(State(app): State<App>, Query(query): Query<Ids>) -> Result<String, (StatusCode, String)> {
    let ids: Vec<i64> = query
        .ids
        .split(',')
        .map(|id| id.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "ids must be numbers: ?ids=1,2,3\n".to_string(),
            )
        })?;
    let found = app.users.get_many(&*app.db, &ids).await.map_err(failed)?;
    let mut out = String::new();
    for (id, user) in ids.iter().zip(found) {
        match user {
            Some(user) => out.push_str(&format!("{id}: {}\n", user.name)),
            None => out.push_str(&format!("{id}: (none)\n")),
        }
    }
    out.push_str(&format!("(queries so far: {})\n", app.queries()));
    Ok(out)
}

async fn rename(
    State(app): State<App>,
    Path(id): Path<i64>,
    name: String,
) -> Result<String, (StatusCode, String)> {
    let write = sqlx::query("UPDATE users SET name = ? WHERE id = ?")
        .bind(name.trim())
        .bind(id)
        .execute(&app.db.pool);
    let done = app
        .users
        .update_then_invalidate(&id, write)
        .await
        .map_err(failed)?;
    Ok(format!("updated {} row(s)\n", done.rows_affected()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    // One connection: an in-memory SQLite database lives in its connection.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await?;
    sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    for (id, name) in [(1, "Ada"), (2, "Grace"), (3, "Barbara")] {
        sqlx::query("INSERT INTO users (id, name) VALUES (?, ?)")
            .bind(id)
            .bind(name)
            .execute(&pool)
            .await?;
    }

    // Two in-process tiers stand in for moka in front of Redis or
    // memcached: put any tier there.
    let cache = Cache::builder(MokaBackend::new(64 << 20).compose(MokaBackend::new(64 << 20)))
        .policy(CachePolicy::long_term())
        .build();
    let app = App {
        db: Arc::new(Users {
            pool,
            queries: AtomicU64::new(0),
        }),
        users: EntityCache::new(cache).with_options(EntryOptions::new().tag("demo")),
    };
    let router = Router::new()
        .route("/users", get(users))
        .route("/users/{id}", get(user).put(rename))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
    tracing::info!("listening on http://127.0.0.1:3002");
    axum::serve(listener, router).await?;
    Ok(())
}
