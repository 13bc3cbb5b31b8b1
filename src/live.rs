//! The settings that change while Watchtower runs — the local-routing switch and the routes —
//! shared by every event loop without a lock on the request path.
//!
//! [`Live`] holds them: the switch in an atomic, the routes (the list as configured and the
//! [`RouteTable`] built from it) behind a lock together with a version counter. Each loop reads
//! through its own [`LiveView`], which keeps the table it last saw and compares one atomic
//! version per request; only after a change does it take the lock, once, to pick up the new
//! table. A request already routed keeps going where it was sent; new requests see the change.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::config::Route;
use crate::route::RouteTable;

/// The routes as configured, and the table built from them.
struct Routes {
    list: Arc<[Route]>,
    table: Arc<RouteTable>,
}

/// The switch and the routes, as of now.
pub struct Live {
    routing: AtomicBool,
    version: AtomicU64,
    routes: RwLock<Routes>,
    /// Held by whoever changes the settings (the admin API, a reload) from reading them to
    /// writing the file and applying, so two changes never interleave.
    editing: Mutex<()>,
}

impl Live {
    pub fn new(local_routing: bool, routes: Vec<Route>) -> Arc<Live> {
        let table = Arc::new(RouteTable::new(&routes));
        Arc::new(Live {
            routing: AtomicBool::new(local_routing),
            version: AtomicU64::new(0),
            routes: RwLock::new(Routes {
                list: routes.into(),
                table,
            }),
            editing: Mutex::new(()),
        })
    }

    /// Serializes changes (see the field); reading needs no lock.
    pub fn edit_lock(&self) -> MutexGuard<'_, ()> {
        self.editing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The local-routing switch.
    pub fn routing(&self) -> bool {
        self.routing.load(Ordering::Relaxed)
    }

    /// Flips the switch; returns what it was.
    pub fn set_routing(&self, on: bool) -> bool {
        self.routing.swap(on, Ordering::Relaxed)
    }

    /// The routes in file order.
    pub fn routes(&self) -> Arc<[Route]> {
        Arc::clone(&self.read().list)
    }

    /// Replaces the routes (already validated); new requests use them at once.
    pub fn set_routes(&self, routes: Vec<Route>) {
        let table = Arc::new(RouteTable::new(&routes));
        let mut current = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        *current = Routes {
            list: routes.into(),
            table,
        };
        // Bumped under the lock, so a reader that sees the new version finds the new table.
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A loop's view.
    pub fn view(self: &Arc<Live>) -> LiveView {
        let (version, table) = self.table();
        LiveView {
            live: Arc::clone(self),
            version,
            table,
        }
    }

    fn table(&self) -> (u64, Arc<RouteTable>) {
        let routes = self.read();
        (
            self.version.load(Ordering::Acquire),
            Arc::clone(&routes.table),
        )
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Routes> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One event loop's view of [`Live`].
pub struct LiveView {
    live: Arc<Live>,
    version: u64,
    table: Arc<RouteTable>,
}

impl LiveView {
    /// The current route table: an atomic load, and a lock only after a change.
    pub fn table(&mut self) -> &Arc<RouteTable> {
        if self.live.version.load(Ordering::Acquire) != self.version {
            (self.version, self.table) = self.live.table();
        }
        &self.table
    }

    /// The local-routing switch.
    pub fn routing(&self) -> bool {
        self.live.routing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Decision, ListenerKind};

    fn route(id: &str, domain: &str, port: u16) -> Route {
        Route {
            id: id.into(),
            domain: domain.into(),
            target_host: "127.0.0.1".into(),
            target_port: port,
            enabled: true,
        }
    }

    fn target(view: &mut LiveView, host: &str) -> Option<u16> {
        let routing = view.routing();
        match view.table().decide(host, routing, ListenerKind::Forward) {
            Decision::Local(r) => Some(r.target_port),
            Decision::Pass => None,
        }
    }

    #[test]
    fn views_pick_up_changes_to_routes_and_the_switch() {
        let live = Live::new(true, vec![route("a", "a.test", 1)]);
        let mut one = live.view();
        let mut two = live.view();
        assert_eq!(target(&mut one, "a.test"), Some(1));
        let before = Arc::as_ptr(one.table());
        assert_eq!(Arc::as_ptr(one.table()), before, "no change, same table");

        live.set_routes(vec![route("a", "a.test", 2), route("b", "b.test", 3)]);
        assert_eq!(target(&mut one, "a.test"), Some(2));
        assert_eq!(target(&mut two, "b.test"), Some(3));
        assert_eq!(live.routes().len(), 2);

        assert!(live.set_routing(false));
        assert_eq!(target(&mut one, "a.test"), None);
        assert!(!live.set_routing(true));
        assert_eq!(target(&mut two, "a.test"), Some(2));
    }
}
