//! The catalog connection with a deadline on every statement.
//!
//! A PostgreSQL that accepts a connection and then never answers (a dead link behind a NAT,
//! a proxy that hangs) would otherwise leave a query waiting for ever, and with it the actor
//! that sent it. Each statement gets `database.statement_timeout` on our side; past it the
//! statement fails with [`CatalogError::Timeout`], the connection is given up (what it was
//! doing is unknown), and its owner reconnects as after any lost connection.

use super::CatalogError;
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, SimpleQueryMessage};

pub(super) struct BoundedClient {
    client: Client,
    timeout: Duration,
    cancel: Cancel,
    /// How long a cancel request may take to be delivered (`database.connect_timeout`).
    cancel_within: Duration,
}

/// Sends PostgreSQL a cancel request for whatever this connection runs.
pub(super) type Cancel = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl BoundedClient {
    pub(super) fn new(client: Client, timeout: Duration, cancel: Cancel, cancel_within: Duration) -> BoundedClient {
        BoundedClient {
            client,
            timeout,
            cancel,
            cancel_within,
        }
    }

    /// `future` within the statement timeout.
    pub(super) async fn bounded<T>(
        &self,
        future: impl Future<Output = Result<T, CatalogError>>,
    ) -> Result<T, CatalogError> {
        self.cancel_on_timeout(bounded(self.timeout, future).await)
    }

    fn cancel_on_timeout<T>(&self, result: Result<T, CatalogError>) -> Result<T, CatalogError> {
        self.canceller().on_timeout(result)
    }

    /// What cancels this connection's statement after a deadline, for the callers that bound
    /// a transaction's steps themselves.
    pub(super) fn canceller(&self) -> Canceller {
        Canceller {
            cancel: self.cancel.clone(),
            within: self.cancel_within,
        }
    }

    pub(super) async fn query(&self, statement: &str, params: Params<'_>) -> Result<Vec<Row>, CatalogError> {
        self.bounded(async { Ok(self.client.query(statement, params).await?) })
            .await
    }

    /// Each row of `statement` in turn, without holding them all: the wait for each part of
    /// the answer is bounded by the statement timeout.
    pub(super) async fn for_each_row(
        &self,
        statement: &str,
        params: &[&(dyn ToSql + Sync)],
        mut each: impl FnMut(&Row),
    ) -> Result<(), CatalogError> {
        use futures::StreamExt;
        let stream = self
            .bounded(async { Ok(self.client.query_raw(statement, params.iter().copied()).await?) })
            .await?;
        // Rows already received are taken together, one deadline for each such chunk (a
        // timer per row cost a rescan of a million files a noticeable part of its time).
        let stream = stream.ready_chunks(1024);
        futures::pin_mut!(stream);
        while let Some(rows) = self.bounded(async { Ok(stream.next().await) }).await? {
            for row in rows {
                each(&row?);
            }
        }
        Ok(())
    }

    pub(super) async fn query_one(&self, statement: &str, params: Params<'_>) -> Result<Row, CatalogError> {
        self.bounded(async { Ok(self.client.query_one(statement, params).await?) })
            .await
    }

    pub(super) async fn query_opt(&self, statement: &str, params: Params<'_>) -> Result<Option<Row>, CatalogError> {
        self.bounded(async { Ok(self.client.query_opt(statement, params).await?) })
            .await
    }

    pub(super) async fn execute(&self, statement: &str, params: Params<'_>) -> Result<u64, CatalogError> {
        self.bounded(async { Ok(self.client.execute(statement, params).await?) })
            .await
    }

    pub(super) async fn batch_execute(&self, statements: &str) -> Result<(), CatalogError> {
        self.bounded(async { Ok(self.client.batch_execute(statements).await?) })
            .await
    }

    pub(super) async fn simple_query(&self, statement: &str) -> Result<Vec<SimpleQueryMessage>, CatalogError> {
        self.bounded(async { Ok(self.client.simple_query(statement).await?) })
            .await
    }

    /// `query` with a deadline of its own (a known long query, such as retention's policy).
    pub(super) async fn query_within(
        &self,
        timeout: Duration,
        statement: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, CatalogError> {
        self.cancel_on_timeout(bounded(timeout, async { Ok(self.client.query(statement, params).await?) }).await)
    }

    /// The raw client, for a transaction (its caller bounds the whole of it) and for
    /// migrations (DDL on a large catalog may take long; it is not bounded).
    pub(super) fn inner_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }
}

pub(super) struct Canceller {
    cancel: Cancel,
    within: Duration,
}

impl Canceller {
    /// After a deadline: ask the server to cancel the statement it may still be running (in
    /// the background, itself bounded; a server that does not answer is not waited for).
    /// Otherwise PostgreSQL runs an abandoned query to its end, holding its locks.
    pub(super) fn on_timeout<T>(&self, result: Result<T, CatalogError>) -> Result<T, CatalogError> {
        if let Err(CatalogError::Timeout(_)) = &result {
            let (cancel, within) = (self.cancel.clone(), self.within);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(within, cancel()).await;
            });
        }
        result
    }
}

/// `future` within `timeout`, or [`CatalogError::Timeout`].
pub(super) async fn bounded<T>(
    timeout: Duration,
    future: impl Future<Output = Result<T, CatalogError>>,
) -> Result<T, CatalogError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result,
        Err(_) => Err(CatalogError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_statement_that_never_answers_fails_at_the_deadline() {
        let never = std::future::pending::<Result<(), CatalogError>>();
        let started = tokio::time::Instant::now();
        let result = bounded(Duration::from_secs(120), never).await;
        assert!(matches!(result, Err(CatalogError::Timeout(limit)) if limit == Duration::from_secs(120)));
        assert_eq!(started.elapsed(), Duration::from_secs(120));
        let quick = bounded(Duration::from_secs(1), async { Ok::<_, CatalogError>(7) }).await;
        assert_eq!(quick.unwrap(), 7);
    }
}
