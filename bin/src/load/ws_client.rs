//! A client of the `/ws` protocol (version 1, [`crate::edge::protocol`]) for the integration
//! suite and load scenarios: one WebSocket, typed requests matched to their replies by id,
//! and the frames the server sends unasked (pushes, and errors about frames without an id)
//! queued until the caller reads them.
//!
//! One connection may carry several accounts' sessions: each request names its session by the
//! key it carries, and the pushes of every session attached to the connection arrive on it.
//! Requests may be pipelined with [`ImClient::send_request`] and [`ImClient::reply`]; replies
//! and pushes read while waiting for something else are kept, never dropped.

use crate::edge::protocol::{
    ClientFrame, ErrorBody, HelloReply, HelloRequest, LoginRequest, Mode, RegisterReply,
    RegisterRequest, SUPPORTED_VERSIONS, ServerFrame, SessionReply,
};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long [`ImClient::request`] waits for its reply unless told otherwise.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(15);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A frame the server sent without an id: a push (`presence`, `message`, ...), or an `error`
/// about a frame whose id could not be read (`bad_frame`, `frame_too_large`).
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// The push's name, or `error`.
    pub op: String,
    /// Its body as sent.
    pub body: rmpv::Value,
}

impl Push {
    /// The body as a protocol type, e.g. [`crate::edge::protocol::PresencePush`] (or
    /// [`ErrorBody`] when `op` is `error`).
    pub fn decode<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        decode_value(&self.body).with_context(|| format!("decoding a {} push", self.op))
    }
}

/// The body of replies that carry nothing but success (`{}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Decodes a MessagePack value with named fields into a protocol type. Through bytes, so that
/// enums read from their names as everywhere else in the protocol.
pub fn decode_value<T: DeserializeOwned>(value: &rmpv::Value) -> anyhow::Result<T> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).context("re-encoding a body")?;
    rmp_serde::from_slice(&bytes).context("a body of an unexpected shape")
}

/// Encodes a body as a MessagePack value with named fields.
fn encode_value<B: Serialize + ?Sized>(body: &B) -> anyhow::Result<rmpv::Value> {
    let bytes = rmp_serde::to_vec_named(body).context("encoding a body")?;
    rmpv::decode::read_value(&mut bytes.as_slice()).context("reading back an encoded body")
}

/// What one read from the socket gave.
enum Read {
    /// A frame (or a ping), now queued where it belongs.
    Frame,
    /// Nothing before the deadline.
    TimedOut,
    /// The connection is closed.
    Closed,
}

/// How a client connects, beyond the node's address.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Bind the connection to this local address (e.g. `127.0.0.7`, to look like another
    /// client machine).
    pub source_ip_opt: Option<IpAddr>,
    /// Send this `X-Forwarded-For` header, as a proxy would.
    pub forwarded_for_opt: Option<String>,
}

/// One WebSocket connection to a node's `/ws`.
pub struct ImClient {
    socket: Socket,
    next_id: u64,
    pushes: VecDeque<Push>,
    replies: HashMap<u64, ServerFrame<rmpv::Value>>,
    closed: bool,
    close_reason_opt: Option<String>,
    reply_timeout: Duration,
    hello_opt: Option<HelloReply>,
}

impl ImClient {
    /// Connects to `ws://{http_address}/ws` and says `hello` with the versions this crate
    /// speaks; fails when the server refuses.
    pub async fn connect(http_address: &str) -> anyhow::Result<Self> {
        let mut client = Self::connect_raw(http_address).await?;
        match client.hello(&SUPPORTED_VERSIONS).await? {
            Ok(_) => Ok(client),
            Err(error) => bail!("hello refused: {error:?}"),
        }
    }

    /// Connects without saying `hello` (to test what the server does before it).
    pub async fn connect_raw(http_address: &str) -> anyhow::Result<Self> {
        Self::connect_raw_with(http_address, &ConnectOptions::default()).await
    }

    /// Like [`ImClient::connect`], from a chosen source address or through a pretended proxy.
    pub async fn connect_with(
        http_address: &str,
        options: &ConnectOptions,
    ) -> anyhow::Result<Self> {
        let mut client = Self::connect_raw_with(http_address, options).await?;
        match client.hello(&SUPPORTED_VERSIONS).await? {
            Ok(_) => Ok(client),
            Err(error) => bail!("hello refused: {error:?}"),
        }
    }

    /// Connects as `options` say, without saying `hello`.
    pub async fn connect_raw_with(
        http_address: &str,
        options: &ConnectOptions,
    ) -> anyhow::Result<Self> {
        let url = format!("ws://{http_address}/ws");
        let mut request = url
            .as_str()
            .into_client_request()
            .with_context(|| format!("building a request for {url}"))?;
        if let Some(forwarded_for) = &options.forwarded_for_opt {
            request.headers_mut().insert(
                "x-forwarded-for",
                forwarded_for
                    .parse()
                    .context("X-Forwarded-For is not a header value")?,
            );
        }
        let server: SocketAddr = http_address
            .parse()
            .with_context(|| format!("{http_address} is not a socket address"))?;
        let tcp_socket = if server.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .context("opening a socket")?;
        if let Some(source_ip) = options.source_ip_opt {
            tcp_socket
                .bind(SocketAddr::new(source_ip, 0))
                .with_context(|| format!("binding to {source_ip}"))?;
        }
        let stream = tcp_socket
            .connect(server)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (socket, _response) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
                .await
                .with_context(|| format!("opening the websocket {url}"))?;
        Ok(Self {
            socket,
            next_id: 1,
            pushes: VecDeque::new(),
            replies: HashMap::new(),
            closed: false,
            close_reason_opt: None,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            hello_opt: None,
        })
    }

    /// Sets how long [`ImClient::request`] waits for a reply.
    pub fn set_reply_timeout(&mut self, timeout: Duration) {
        self.reply_timeout = timeout;
    }

    /// Says `hello` with `versions`; the reply is kept (see [`ImClient::hello_reply`]).
    pub async fn hello(
        &mut self,
        versions: &[u32],
    ) -> anyhow::Result<Result<HelloReply, ErrorBody>> {
        let request = HelloRequest {
            versions: versions.to_vec(),
        };
        let reply: Result<HelloReply, ErrorBody> = self.request("hello", None, &request).await?;
        if let Ok(hello) = &reply {
            self.hello_opt = Some(hello.clone());
        }
        Ok(reply)
    }

    /// The server's answer to the last accepted `hello`.
    pub fn hello_reply(&self) -> Option<&HelloReply> {
        self.hello_opt.as_ref()
    }

    /// Sends `op` with `body` (and the key, when given) and waits for its reply: the decoded
    /// body of `ok`, or the [`ErrorBody`] of `error`. Pushes and other replies read meanwhile
    /// are kept. Fails when the connection closes or no reply comes in time.
    pub async fn request<B: Serialize + ?Sized, R: DeserializeOwned>(
        &mut self,
        op: &str,
        key_opt: Option<&str>,
        body: &B,
    ) -> anyhow::Result<Result<R, ErrorBody>> {
        let id = self.send_request(op, key_opt, body).await?;
        self.reply(id)
            .await
            .with_context(|| format!("request {op} (id {id})"))
    }

    /// Like [`ImClient::request`], with an `error` reply turned into an error.
    pub async fn request_ok<B: Serialize + ?Sized, R: DeserializeOwned>(
        &mut self,
        op: &str,
        key_opt: Option<&str>,
        body: &B,
    ) -> anyhow::Result<R> {
        match self.request(op, key_opt, body).await? {
            Ok(reply) => Ok(reply),
            Err(error) => bail!("{op} refused: {:?}: {}", error.code, error.message),
        }
    }

    /// Sends `op` once per `(key, body)` without waiting in between (the node runs a few at
    /// once), then collects the replies in the order of the requests.
    pub async fn request_many<K: AsRef<str>, B: Serialize, R: DeserializeOwned>(
        &mut self,
        op: &str,
        requests: impl IntoIterator<Item = (Option<K>, B)>,
    ) -> anyhow::Result<Vec<Result<R, ErrorBody>>> {
        let mut ids = Vec::new();
        for (key_opt, body) in requests {
            ids.push(
                self.send_request(op, key_opt.as_ref().map(AsRef::as_ref), &body)
                    .await?,
            );
        }
        let mut replies = Vec::with_capacity(ids.len());
        for id in ids {
            replies.push(
                self.reply(id)
                    .await
                    .with_context(|| format!("request {op} (id {id})"))?,
            );
        }
        Ok(replies)
    }

    /// Sends a request without waiting; returns its id for [`ImClient::reply`].
    pub async fn send_request<B: Serialize + ?Sized>(
        &mut self,
        op: &str,
        key_opt: Option<&str>,
        body: &B,
    ) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = ClientFrame {
            id,
            op: op.to_owned(),
            key: key_opt.map(str::to_owned),
            body: encode_value(body)?,
        };
        let bytes = rmp_serde::to_vec_named(&frame).context("encoding a frame")?;
        self.send_raw(bytes).await?;
        Ok(id)
    }

    /// Waits for the reply to request `id` (sent with [`ImClient::send_request`]).
    pub async fn reply<R: DeserializeOwned>(
        &mut self,
        id: u64,
    ) -> anyhow::Result<Result<R, ErrorBody>> {
        let deadline = Instant::now() + self.reply_timeout;
        let frame = loop {
            if let Some(frame) = self.replies.remove(&id) {
                break frame;
            }
            match self.read_one(deadline).await? {
                Read::Frame => {}
                Read::TimedOut => bail!("no reply within {:?}", self.reply_timeout),
                Read::Closed => bail!(
                    "the connection closed before the reply ({})",
                    self.close_reason()
                ),
            }
        };
        match frame.op.as_str() {
            "ok" => Ok(Ok(decode_value(&frame.body)?)),
            "error" => Ok(Err(decode_value(&frame.body)?)),
            other => bail!("a reply with op {other:?}"),
        }
    }

    /// `account.register`.
    pub async fn register(
        &mut self,
        username: &str,
        password: &str,
        display_name: &str,
    ) -> anyhow::Result<Result<RegisterReply, ErrorBody>> {
        let request = RegisterRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            display_name: display_name.to_owned(),
        };
        self.request("account.register", None, &request).await
    }

    /// `session.login`; the reply carries the key.
    pub async fn login(
        &mut self,
        username: &str,
        password: &str,
        device: &str,
        mode: Mode,
    ) -> anyhow::Result<Result<SessionReply, ErrorBody>> {
        let request = LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            device: device.to_owned(),
            mode,
        };
        self.request("session.login", None, &request).await
    }

    /// Sends bytes as one binary frame, as they are.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.socket
            .send(Message::binary(bytes))
            .await
            .context("sending a binary frame")
    }

    /// Sends a text frame (which the protocol does not speak).
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.socket
            .send(Message::text(text))
            .await
            .context("sending a text frame")
    }

    /// The next push (or id-less `error`), waiting at most `timeout`; `None` when none came
    /// in time or the connection closed (see [`ImClient::is_closed`]).
    pub async fn next_push(&mut self, timeout: Duration) -> anyhow::Result<Option<Push>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(push) = self.pushes.pop_front() {
                return Ok(Some(push));
            }
            match self.read_one(deadline).await? {
                Read::Frame => {}
                Read::TimedOut | Read::Closed => return Ok(None),
            }
        }
    }

    /// The first push for which `wanted` holds, waiting at most `timeout`; the pushes before
    /// it stay queued. Fails (listing what did come) when none does.
    pub async fn wait_for_push(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Push) -> bool,
    ) -> anyhow::Result<Push> {
        let deadline = Instant::now() + timeout;
        let mut n_checked = 0;
        loop {
            if let Some(index) = self
                .pushes
                .iter()
                .skip(n_checked)
                .position(&wanted)
                .map(|position| position + n_checked)
                && let Some(push) = self.pushes.remove(index)
            {
                return Ok(push);
            }
            n_checked = self.pushes.len();
            let outcome = self.read_one(deadline).await?;
            let ended = match outcome {
                Read::Frame => None,
                Read::TimedOut => Some(format!("not within {timeout:?}")),
                Read::Closed => Some(format!("connection closed ({})", self.close_reason())),
            };
            if let Some(ended) = ended {
                let seen: Vec<&str> = self.pushes.iter().map(|push| push.op.as_str()).collect();
                bail!("the awaited push did not come: {ended}; queued pushes: {seen:?}");
            }
        }
    }

    /// The body of the first push named `op`, waiting at most `timeout`; the pushes before it
    /// stay queued.
    pub async fn wait_for_op<T: DeserializeOwned>(
        &mut self,
        op: &str,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        self.wait_for_push(timeout, |push| push.op == op)
            .await
            .with_context(|| format!("waiting for a {op} push"))?
            .decode()
    }

    /// Every push until none came for `quiet`, or `max_wait` passed, or the connection closed.
    pub async fn pushes_until_quiet(
        &mut self,
        quiet: Duration,
        max_wait: Duration,
    ) -> anyhow::Result<Vec<Push>> {
        let deadline = Instant::now() + max_wait;
        let mut pushes = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(pushes);
            }
            match self.next_push(quiet.min(remaining)).await? {
                Some(push) => pushes.push(push),
                None => return Ok(pushes),
            }
        }
    }

    /// Waits at most `timeout` for the server to close the connection; frames read meanwhile
    /// are kept. Whether it closed.
    pub async fn wait_closed(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_one(deadline).await? {
                Read::Frame => {}
                Read::TimedOut => return Ok(false),
                Read::Closed => return Ok(true),
            }
        }
    }

    /// Whether the connection is known to be closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// How the connection closed, as far as is known.
    pub fn close_reason(&self) -> String {
        self.close_reason_opt
            .clone()
            .unwrap_or_else(|| "not closed".to_owned())
    }

    /// Closes the connection (a close handshake, at most a second), dropping what is queued.
    pub async fn close(mut self) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        let sent = self.socket.close(None).await;
        let _ = self.wait_closed(Duration::from_secs(1)).await;
        match sent {
            Ok(()) | Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => Ok(()),
            Err(error) => Err(error).context("closing the connection"),
        }
    }

    /// Reads one message before `deadline` and files it: replies by id, the rest as pushes.
    async fn read_one(&mut self, deadline: Instant) -> anyhow::Result<Read> {
        if self.closed {
            return Ok(Read::Closed);
        }
        let message = match tokio::time::timeout_at(deadline, self.socket.next()).await {
            Err(_elapsed) => return Ok(Read::TimedOut),
            Ok(None) => return Ok(self.mark_closed("end of stream".to_owned())),
            Ok(Some(Err(error))) => return Ok(self.mark_closed(format!("error: {error}"))),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Binary(bytes) => {
                let frame: ServerFrame<rmpv::Value> =
                    rmp_serde::from_slice(&bytes).context("a server frame that does not decode")?;
                match frame.id {
                    Some(id) => {
                        self.replies.insert(id, frame);
                    }
                    None => self.pushes.push_back(Push {
                        op: frame.op,
                        body: frame.body,
                    }),
                }
                Ok(Read::Frame)
            }
            Message::Text(text) => bail!("the server sent a text frame: {}", text.as_str()),
            Message::Close(frame_opt) => Ok(self.mark_closed(match frame_opt {
                Some(frame) => format!("close frame {}: {}", frame.code, frame.reason.as_str()),
                None => "close frame".to_owned(),
            })),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(Read::Frame),
        }
    }

    fn mark_closed(&mut self, reason: String) -> Read {
        self.closed = true;
        self.close_reason_opt.get_or_insert(reason);
        Read::Closed
    }
}
