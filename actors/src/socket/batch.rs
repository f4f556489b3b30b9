//! Datagrams in batches: one `recvmmsg` reads up to [`BATCH`] datagrams (each with the
//! socket's count of kernel drops, see [`super::overflow`]) into buffers allocated once, and
//! one `sendmmsg` sends any of them on, from those same buffers — consecutive datagrams of
//! one size to one address as one GSO message, a single trip down the stack. A relay under
//! load then costs two system calls per batch instead of two per datagram, and nothing per
//! datagram on the heap.

use introducer_proto::MAX_DATAGRAM;
use socket2::{SockAddr, SockAddrStorage};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Datagrams read (and sent) per system call, at most.
pub const BATCH: usize = 32;
/// Each buffer holds one byte more than a datagram may have, so an oversized one is seen as
/// such (and dropped as malformed).
const BUF: usize = MAX_DATAGRAM + 1;

/// A datagram of the last read to send on: `via` names the socket (for the caller to pick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Out {
    pub via: crate::SocketId,
    pub index: usize,
    pub dst: SocketAddr,
}

/// What the kernel said about one datagram read.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub len: usize,
    pub src: SocketAddr,
    /// The socket's running count of kernel drops, once there were any.
    pub drops: Option<u32>,
}

pub struct Batch {
    bufs: Box<[[u8; BUF]]>,
    names: Box<[SockAddrStorage]>,
    /// u64s: aligned for a cmsghdr; room for one u32 message each.
    controls: Box<[[u64; 8]]>,
    meta: Vec<Meta>,
    /// Sends use UDP GSO (until a device refuses it).
    gso: std::cell::Cell<bool>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            bufs: vec![[0u8; BUF]; BATCH].into_boxed_slice(),
            // SAFETY: all-zero is a valid sockaddr_storage.
            names: (0..BATCH).map(|_| SockAddrStorage::zeroed()).collect(),
            controls: vec![[0u64; 8]; BATCH].into_boxed_slice(),
            meta: Vec::with_capacity(BATCH),
            gso: std::cell::Cell::new(gso_supported()),
        }
    }
}

impl Batch {
    /// Reads what is queued, up to [`BATCH`] datagrams: on a blocking socket it waits for
    /// one, on a non-blocking one it says `WouldBlock` when nothing is queued. Replaces what
    /// the batch held.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let mut iovs: [libc::iovec; BATCH] =
            std::array::from_fn(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
        // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for i in 0..BATCH {
            iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: BUF };
            let msg = &mut hdrs[i].msg_hdr;
            msg.msg_namelen = self.names[i].size_of();
            msg.msg_name = (&mut self.names[i] as *mut SockAddrStorage).cast();
            msg.msg_iov = &mut iovs[i];
            msg.msg_iovlen = 1;
            msg.msg_control = self.controls[i].as_mut_ptr().cast();
            msg.msg_controllen = mem::size_of_val(&self.controls[i]) as _;
        }
        // SAFETY: every header points at live buffers of the sizes it states, and they
        // outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.meta.clear();
        for (i, hdr) in hdrs[..n as usize].iter().enumerate() {
            let msg = &hdr.msg_hdr;
            let mut drops = None;
            // SAFETY: the CMSG macros walk the control buffer recvmmsg filled, within the
            // length it set.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(msg);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                        drops = Some(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const u32));
                    }
                    cmsg = libc::CMSG_NXTHDR(msg, cmsg);
                }
            }
            let name = mem::replace(&mut self.names[i], SockAddrStorage::zeroed());
            // SAFETY: recvmmsg filled this storage and set its length.
            let name = unsafe { SockAddr::new(name, msg.msg_namelen) };
            // A source of another family cannot happen on a socket of one; such a datagram
            // is kept with an unspecified source (and goes nowhere).
            let src = name.as_socket().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            self.meta.push(Meta { len: hdr.msg_len as usize, src, drops });
        }
        Ok(self.meta.len())
    }

    /// A batch that never uses GSO: what a plain `recvmmsg`/`sendmmsg` program does (the
    /// relay bench's reference forwarder).
    pub fn without_gso() -> Batch {
        let batch = Batch::default();
        batch.gso.set(false);
        batch
    }

    /// What the last [`Batch::recv`] read.
    pub fn meta(&self) -> &[Meta] {
        &self.meta
    }

    /// Datagram `i` of the last read, to look at or rewrite in place.
    pub fn datagram(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i][..self.meta[i].len]
    }

    /// Sends datagrams of the last read (by index) to the addresses given: how many went (the
    /// kernel takes a prefix; on a non-blocking socket, `WouldBlock` when it takes none).
    /// Consecutive datagrams of one size to one address go down the stack as one (UDP GSO)
    /// where the kernel and the device can; a device that cannot turns it off for good.
    pub fn send(&self, socket: &impl AsRawFd, out: &[Out]) -> io::Result<usize> {
        let gso = self.gso.get();
        match self.send_with(socket, out, gso) {
            Err(e) if gso && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                tracing::debug!("UDP GSO refused ({e}): sending datagrams one by one");
                self.gso.set(false);
                self.send_with(socket, out, false)
            }
            sent => sent,
        }
    }

    fn send_with(&self, socket: &impl AsRawFd, out: &[Out], gso: bool) -> io::Result<usize> {
        let n = out.len().min(BATCH);
        let mut names: [Option<SockAddr>; BATCH] = std::array::from_fn(|_| None);
        let mut iovs: [libc::iovec; BATCH] =
            std::array::from_fn(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
        // SAFETY: all-zero is a valid mmsghdr.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        let mut controls = [[0u64; 4]; BATCH];
        // How many datagrams each message carries.
        let mut carries = [0usize; BATCH];
        let (mut k, mut m) = (0, 0);
        while k < n {
            let Out { dst, index, .. } = out[k];
            let size = self.meta[index].len;
            // A GSO message: segments of one size, the last one maybe shorter.
            let mut end = k + 1;
            while gso && end < n && out[end].dst == dst && self.meta[out[end].index].len <= size {
                end += 1;
                if self.meta[out[end - 1].index].len < size {
                    break;
                }
            }
            for (iov, o) in iovs[k..end].iter_mut().zip(&out[k..end]) {
                // sendmmsg only reads the buffers; iovec wants a mut pointer all the same.
                *iov = libc::iovec { iov_base: self.bufs[o.index].as_ptr() as *mut _, iov_len: self.meta[o.index].len };
            }
            let msg = &mut hdrs[m].msg_hdr;
            let name = names[m].insert(SockAddr::from(dst));
            msg.msg_namelen = name.len();
            // sendmmsg only reads the address.
            msg.msg_name = name.as_ptr() as *mut libc::c_void;
            msg.msg_iov = &mut iovs[k];
            msg.msg_iovlen = end - k;
            if end - k > 1 {
                msg.msg_control = controls[m].as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; the control buffer has room for
                // one cmsghdr with a u16, which CMSG_FIRSTHDR/CMSG_DATA point into.
                unsafe {
                    msg.msg_controllen = libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as _;
                    let cmsg = libc::CMSG_FIRSTHDR(msg);
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size as u16);
                }
            }
            carries[m] = end - k;
            (k, m) = (end, m + 1);
        }
        // SAFETY: every header points at live buffers of the sizes it states.
        let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), m as _, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(carries[..sent as usize].iter().sum())
    }
}

/// `UDP_SEGMENT` (linux/udp.h): the size of the datagrams a GSO send is cut into.
const UDP_SEGMENT: libc::c_int = 103;

/// Whether the kernel offers UDP GSO (Linux 4.18 and later): it knows the option.
fn gso_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else { return false };
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid fd and an int-sized buffer with its length.
        let r = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                UDP_SEGMENT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        r == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// Reads `expected` datagrams in as many batches as the kernel hands them over (on a busy
    /// machine loopback delivery may lag the sends) and sends each batch on at once, each
    /// datagram to `route(its source)`.
    fn relay_all(relay: &UdpSocket, expected: usize, route: impl Fn(SocketAddr) -> SocketAddr) -> Batch {
        relay.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut batch = Batch::default();
        let mut done = 0;
        while done < expected {
            let n = batch.recv(relay).unwrap();
            let out: Vec<Out> = (0..n)
                .map(|index| Out { via: crate::SocketId::PRIMARY, index, dst: route(batch.meta()[index].src) })
                .collect();
            assert_eq!(batch.send(relay, &out).unwrap(), n);
            done += n;
        }
        assert_eq!(done, expected);
        batch
    }

    /// Datagrams from two sources are read in batches with their sources and lengths, and
    /// sent on from the same buffers to two destinations, each exactly, in order.
    #[test]
    fn a_batch_is_read_and_sent_on_whole() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..10u8 {
            a.send_to(&vec![i; 100 + usize::from(i)], relay.local_addr().unwrap()).unwrap();
            c.send_to(&[i; 3], relay.local_addr().unwrap()).unwrap();
        }
        // A's datagrams go to C, C's to A.
        let (a_addr, c_addr) = (a.local_addr().unwrap(), c.local_addr().unwrap());
        let batch = relay_all(&relay, 20, |src| if src == a_addr { c_addr } else { a_addr });
        assert!(batch.meta().iter().all(|m| m.src == a_addr || m.src == c_addr));
        let mut buf = [0u8; 2048];
        for k in 0..10u8 {
            let (len, _) = c.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], vec![k; 100 + usize::from(k)].as_slice());
            let (len, _) = a.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], &[k; 3]);
        }
        relay.set_nonblocking(true).unwrap();
        let mut batch = Batch::default();
        assert_eq!(batch.recv(&relay).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    /// Runs of one size (the last of a run maybe shorter) to one address go down as one GSO
    /// message each and arrive as the datagrams they were, in order.
    #[test]
    fn runs_of_one_size_go_as_one_and_arrive_apart() {
        let (relay, a, c) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        let sizes = [500, 500, 500, 500, 500, 200, 500, 500, 500, 1233];
        for (i, &size) in sizes.iter().enumerate() {
            a.send_to(&vec![i as u8; size], relay.local_addr().unwrap()).unwrap();
        }
        let batch = relay_all(&relay, sizes.len(), |_| c.local_addr().unwrap());
        assert_eq!(batch.gso.get(), gso_supported(), "GSO stays on where the kernel has it");
        let mut buf = [0u8; 2048];
        for (i, &size) in sizes.iter().enumerate() {
            let len = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..len], vec![i as u8; size].as_slice());
        }
    }
}
