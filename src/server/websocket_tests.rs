//! Tests of the WebSocket transport over real sockets.
