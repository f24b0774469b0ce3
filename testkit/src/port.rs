use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Socket, Type};

/// A TCP port that is the test's for as long as it holds this: a socket bound to it with
/// SO_REUSEADDR that never listens.
///
/// Choosing a port by binding port 0 and closing the socket, then passing the number on,
/// leaves a gap in which any process may take it. Held, the port is taken by no one else: the
/// kernel never picks a bound port for a `bind` to port 0 or for an outgoing connection, and a
/// `bind` without SO_REUSEADDR fails. Our own processes can still bind it, because they bind
/// with SO_REUSEADDR as well (tokio's and std's `TcpListener::bind`, the router's listeners)
/// and Linux lets such sockets share a port as long as at most one of them listens. Until one
/// of ours listens, connecting to the port is refused.
#[derive(Debug)]
pub struct ReservedPort {
    addr: SocketAddr,
    _socket: Socket,
}

impl ReservedPort {
    /// A port on 127.0.0.1.
    pub fn localhost() -> ReservedPort {
        ReservedPort::on(Ipv4Addr::LOCALHOST)
    }

    /// A port on `ip`. On 0.0.0.0 it is held on every address of the host, for listeners
    /// on 127.0.0.2, 127.0.0.3…
    pub fn on(ip: impl Into<IpAddr>) -> ReservedPort {
        let want = SocketAddr::new(ip.into(), 0);
        let reserve = || -> std::io::Result<(Socket, SocketAddr)> {
            let s = Socket::new(Domain::for_address(want), Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.bind(&want.into())?;
            let addr = s.local_addr()?.as_socket().expect("an IP socket");
            Ok((s, addr))
        };
        let (socket, addr) = reserve().unwrap_or_else(|e| panic!("cannot reserve a port: {e}"));
        ReservedPort {
            addr,
            _socket: socket,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// `n` distinct ports on 127.0.0.1.
pub fn reserved_ports(n: usize) -> Vec<ReservedPort> {
    (0..n).map(|_| ReservedPort::localhost()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn our_listeners_bind_a_held_port_and_no_one_else_does() {
        let held = ReservedPort::localhost();
        // Nothing listens yet: refused, not left hanging.
        let e = std::net::TcpStream::connect(held.addr()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        // A bind without SO_REUSEADDR, as a foreign process might do, fails.
        let foreign = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let e = foreign.bind(&held.addr().into()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        // std's and tokio's listeners (what the CLI, the controller and config-sync bind with)
        // take it, one after the other, while it stays held.
        let l = std::net::TcpListener::bind(held.addr()).unwrap();
        std::net::TcpStream::connect(held.addr()).unwrap();
        drop(l);
        let l = tokio::net::TcpListener::bind(held.addr()).await.unwrap();
        tokio::net::TcpStream::connect(held.addr()).await.unwrap();
        drop(l);
        // The router listens through a bound socket of its own first (router/src/tcp.rs).
        let router = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        router.set_reuse_address(true).unwrap();
        router.bind(&held.addr().into()).unwrap();
        router.listen(16).unwrap();
        std::net::TcpStream::connect(held.addr()).unwrap();
    }

    #[test]
    fn a_port_held_on_every_address_can_be_listened_on_at_two_of_them() {
        let held = ReservedPort::on(Ipv4Addr::UNSPECIFIED);
        let _west = std::net::TcpListener::bind(("127.0.0.2", held.port())).unwrap();
        let _east = std::net::TcpListener::bind(("127.0.0.3", held.port())).unwrap();
        let foreign = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let e = foreign
            .bind(&SocketAddr::from(([127, 0, 0, 4], held.port())).into())
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    }
}
