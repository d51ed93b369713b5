//! A real exec-server on a loopback port, for the tests.
#![allow(dead_code)]

pub(crate) mod frames;

use std::sync::Arc;

use tracewire_exec::{ExecClient, ExecConfig, ExecServer, Start};
use tracewire_rpc::ServerConfig;
use tracewire_rpc::grpc::{Address, BoundServer};

pub(crate) struct TestServer {
    pub(crate) address: String,
    pub(crate) server: Arc<ExecServer>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub(crate) async fn server() -> TestServer {
    server_with(ExecConfig::default(), ServerConfig::default()).await
}

pub(crate) async fn server_with(config: ExecConfig, rpc: ServerConfig) -> TestServer {
    serve_handler(ExecServer::new(config), rpc).await
}

pub(crate) async fn serve_handler(handler: ExecServer, rpc: ServerConfig) -> TestServer {
    let bound = BoundServer::bind(&"127.0.0.1:0".parse::<Address>().unwrap()).await.unwrap();
    let address = bound.local_address().to_string();
    let server = Arc::new(handler);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = Arc::clone(&server);
    tokio::spawn(async move {
        bound
            .run(s, rpc, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    TestServer { address, server, stop: Some(stop) }
}

pub(crate) fn argv(args: &[&str]) -> Start {
    Start { argv: args.iter().map(|s| (*s).to_owned()).collect(), ..Start::default() }
}

pub(crate) async fn client(s: &TestServer) -> ExecClient {
    ExecClient::connect(&s.address).await.unwrap()
}
