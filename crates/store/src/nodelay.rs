//! `TCP_NODELAY` on PostgreSQL connections.
//!
//! sqlx 0.9.0 opens its TCP sockets without `TCP_NODELAY` (upstream: transact-rs/sqlx#4335,
//! fixed after 0.9.0, which is the newest release). With Nagle's algorithm on, a message
//! longer than one TCP segment leaves its last, partial segment waiting for the server's
//! ACK of the others, and the server delays that ACK by up to 40 ms: every statement whose
//! text and parameters pass one segment (64 KB on loopback, about 1,400 bytes over Ethernet)
//! stalls for ~40 ms. On a 1M-subscriber plan that was 45 of the control group's 29
//! statements and of the 15 batches' (bench-plan's statement log: ~45 ms between `parse` and
//! `bind` of each), about 2 s of a 7.8 s plan.
//!
//! sqlx gives no handle on its socket, so this finds it: right after connecting, the server
//! says which client port it sees (`inet_client_port()`), and the socket of this process
//! whose local port and peer port are that connection's is the one to set. A connection
//! over a Unix socket (no port), through NAT or a pooler (ports that do not match), or on
//! another OS is left as sqlx made it: slower, never wrong.

use sea_orm::sqlx::{self, PgConnection};

/// Sets `TCP_NODELAY` on `conn`'s socket; false when it could not be found (see the module
/// doc), which is not an error.
pub(crate) async fn set(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let (client, server): (Option<i32>, Option<i32>) =
        sqlx::query_as("SELECT inet_client_port(), inet_server_port()")
            .fetch_one(&mut *conn)
            .await?;
    let (Some(client), Some(server)) = (client, server) else {
        return Ok(false);
    };
    let (Ok(client), Ok(server)) = (u16::try_from(client), u16::try_from(server)) else {
        return Ok(false);
    };
    Ok(set_on_socket(client, server))
}

/// Calls `f` with each open file of this process as a socket reference, until `f` returns
/// true; false if it never did. Calls on a file that is not a socket fail, which `f` sees.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn find_socket(mut f: impl FnMut(socket2::SockRef<'_>) -> bool) -> bool {
    use std::os::fd::BorrowedFd;
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: `fd` was listed as open a moment ago; the borrow lives for `f`'s few
        // syscalls and nothing is closed through it. If another thread closes it in between,
        // the calls fail (EBADF) or read another file's addresses; `set_on_socket` changes
        // only a TCP socket with exactly this connection's local and peer ports, and while
        // the connection is open (the caller holds it) no other socket can have both.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if f(socket2::SockRef::from(&fd)) {
            return true;
        }
    }
    false
}

#[cfg(target_os = "linux")]
fn port(a: std::io::Result<socket2::SockAddr>) -> Option<u16> {
    a.ok().and_then(|a| a.as_socket()).map(|a| a.port())
}

#[cfg(target_os = "linux")]
fn set_on_socket(local_port: u16, peer_port: u16) -> bool {
    let mut set = false;
    find_socket(|socket| {
        let ours = port(socket.local_addr()) == Some(local_port)
            && port(socket.peer_addr()) == Some(peer_port);
        if ours {
            set = socket.set_tcp_nodelay(true).is_ok();
        }
        ours
    });
    set
}

#[cfg(not(target_os = "linux"))]
fn set_on_socket(_local_port: u16, _peer_port: u16) -> bool {
    false
}

/// For tests: whether each TCP socket of this process whose peer port is `peer_port` has
/// `TCP_NODELAY` set.
#[cfg(all(feature = "test-util", target_os = "linux"))]
pub(crate) fn sockets_to(peer_port: u16) -> Vec<bool> {
    let mut out = Vec::new();
    find_socket(|socket| {
        if port(socket.peer_addr()) == Some(peer_port) {
            out.push(socket.tcp_nodelay().unwrap_or(false));
        }
        false
    });
    out
}
