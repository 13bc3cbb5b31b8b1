//! The few operating-system calls std and mio do not wrap. This is the only module allowed
//! `unsafe`; every libc call goes through [`cvt`], which turns -1 into `io::Error`.
#![allow(unsafe_code)]

use std::io;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Raises the soft open-file limit to the hard limit, so a busy proxy (two sockets per
/// proxied connection) is not capped by the common default of 1024. Returns the new soft
/// limit.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        let wanted = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `wanted` is a valid rlimit read by the call; no pointer is retained.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) })?;
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn limit_is_at_least_the_usual_default() {
        let n = super::raise_open_file_limit().unwrap();
        assert!(n >= 256, "soft limit {n}");
    }
}
