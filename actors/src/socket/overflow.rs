//! The datagrams the kernel dropped on a socket before the node read them (its receive
//! buffer was full): `SO_RXQ_OVFL` has Linux attach the socket's running count of drops to
//! each datagram received, so a flood or a birthday burst that overflowed the buffer shows
//! in `stats` instead of vanishing. The count a datagram carries is the one when it was
//! queued: drops after the last datagram read show with the next one.

use std::io;
use std::mem;
use std::os::fd::AsRawFd;

/// Asks the kernel to count drops on `socket` (from now on).
pub fn enable(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and an int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::super::batch::Batch;
    use super::*;
    use std::net::UdpSocket;

    /// A burst into a small receive buffer nobody reads: every datagram is either read or
    /// counted as dropped, exactly.
    #[test]
    fn every_datagram_is_read_or_counted_as_dropped() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&rx).set_recv_buffer_size(4096).unwrap();
        enable(&rx).unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = 2000;
        for i in 0..sent {
            tx.send_to(&[i as u8; 500], rx.local_addr().unwrap()).unwrap();
        }
        let mut batch = Batch::default();
        let mut read = 0;
        loop {
            match batch.recv(&rx) {
                Ok(n) => {
                    assert!(batch.meta().iter().all(|m| (m.len, m.src) == (500, tx.local_addr().unwrap())));
                    read += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        // The drops show on the next datagram queued after them. On a busy machine loopback
        // delivery may lag the sends: what was still on its way is read first.
        tx.send_to(b"last", rx.local_addr().unwrap()).unwrap();
        rx.set_nonblocking(false).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let last = loop {
            let n = batch.recv(&rx).unwrap();
            let metas = batch.meta()[..n].to_vec();
            read += metas.iter().filter(|m| m.len == 500).count();
            if let Some(last) = metas.iter().find(|m| m.len == 4) {
                break *last;
            }
        };
        let dropped = last.drops.expect("a count once something was dropped") as usize;
        assert!(dropped > 0, "a 4 kB buffer holds few of 2000 datagrams");
        assert_eq!(read + dropped, sent, "read {read}, dropped {dropped}");
    }
}
