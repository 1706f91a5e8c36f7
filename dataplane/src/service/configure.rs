//! A built-in app's section of a reloaded configuration: the app whose options changed is
//! stopped and, when it ran or is enabled now, started again with the new ones; its section
//! gone, it stops. The other apps, the routes and their streams are left alone.

use std::time::Instant;

use super::control::Deferred;
use super::{Context, Service};
use crate::api::socks::SocksApp;
use crate::api::vpn::VpnApp;
use crate::api::{AppChange, AppConfig, BuiltinApp, Reply, RequestError, RequestId, Response};
use crate::{socks, vpn};

/// An app's options, as far as a reload compares them.
trait AppOptions: PartialEq {
    /// Whether the app starts with the node.
    fn enabled(&self) -> bool;
    /// Whether the options are `other` but for `enabled`.
    fn same_but_enabled(&self, other: &Self) -> bool;
}

impl AppOptions for socks::ClientOptions {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn same_but_enabled(&self, other: &Self) -> bool {
        *self
            == socks::ClientOptions {
                enabled: self.enabled,
                ..other.clone()
            }
    }
}

impl AppOptions for socks::ServerOptions {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn same_but_enabled(&self, other: &Self) -> bool {
        *self
            == socks::ServerOptions {
                enabled: self.enabled,
                ..other.clone()
            }
    }
}

impl AppOptions for vpn::ClientOptions {
    fn enabled(&self) -> bool {
        self.start
    }

    fn same_but_enabled(&self, other: &Self) -> bool {
        *self
            == vpn::ClientOptions {
                start: self.start,
                ..other.clone()
            }
    }
}

impl AppOptions for vpn::ServerOptions {
    fn enabled(&self) -> bool {
        self.start
    }

    fn same_but_enabled(&self, other: &Self) -> bool {
        *self
            == vpn::ServerOptions {
                start: self.start,
                ..other.clone()
            }
    }
}

/// What a new section does to an app configured with `current` (`None`: no section) that
/// runs or not. `enabled` only says whether the app starts with the node: when only it changed,
/// a running app runs on, and a stopped one starts if it is enabled now.
fn decide<T: AppOptions>(current: Option<&T>, running: bool, new: Option<&T>) -> AppChange {
    let Some(new) = new else {
        return AppChange::Removed;
    };
    let only_enabled = current.is_some_and(|current| current.same_but_enabled(new));
    match (only_enabled, running, new.enabled()) {
        (true, true, _) | (true, false, false) => AppChange::Unchanged,
        (false, true, _) => AppChange::Restarted,
        (_, false, true) => AppChange::Started,
        (false, false, false) => AppChange::Configured,
    }
}

impl AppChange {
    /// Whether the app is stopped first.
    fn stops(self) -> bool {
        matches!(self, AppChange::Restarted | AppChange::Removed)
    }

    /// Whether the app is started with its new options.
    fn starts(self) -> bool {
        matches!(self, AppChange::Restarted | AppChange::Started)
    }
}

impl Service {
    /// Puts an app's new section in force; the answer comes once the app has stopped and
    /// started as it must.
    pub(super) fn configure_app(&mut self, now: Instant, id: RequestId, config: AppConfig) {
        let app = config.app();
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        let change = match config {
            AppConfig::SocksClient(options) => {
                let (current, running) = split(self.socks.client());
                let change = decide(current, running, options.as_ref());
                if change.stops() {
                    let _ = self.socks.stop(&mut cx, Some(SocksApp::Client));
                }
                self.socks.set_client_options(now, options);
                change
            }
            AppConfig::SocksServer(options) => {
                let (current, running) = split(self.socks.server());
                let change = decide(current, running, options.as_ref());
                if change.stops() {
                    let _ = self.socks.stop(&mut cx, Some(SocksApp::Server));
                }
                self.socks.set_server_options(options);
                change
            }
            AppConfig::VpnClient(options) => {
                let running = self.vpn.is_running(VpnApp::Client);
                let change = decide(
                    self.vpn.options().client.as_ref(),
                    running,
                    options.as_ref(),
                );
                if change.stops() {
                    let socks = &self.socks;
                    self.vpn
                        .stop(&mut cx, VpnApp::Client, |peer| socks.uses_route(peer));
                }
                self.vpn.set_client_options(options);
                change
            }
            AppConfig::VpnServer(options) => {
                let running = self.vpn.is_running(VpnApp::Server);
                let change = decide(
                    self.vpn.options().server.as_ref(),
                    running,
                    options.as_ref(),
                );
                if change.stops() {
                    let socks = &self.socks;
                    self.vpn
                        .stop(&mut cx, VpnApp::Server, |peer| socks.uses_route(peer));
                }
                self.vpn.set_server_options(options);
                change
            }
        };
        log::info!("new configuration of {app}: {change:?}");
        if change.starts() {
            if let BuiltinApp::Socks(socks_app) = app {
                if let Err(error) = self.socks.start(&mut cx, Some(socks_app)) {
                    self.control.reply(id, Err(RequestError::app(error)));
                    return;
                }
            }
        }
        self.control.defer(
            id,
            Deferred::AppConfigured {
                app,
                change,
                start_due: change.starts() && matches!(app, BuiltinApp::Vpn(_)),
            },
        );
        self.answer_deferred(now);
    }

    /// The answer to an app's new configuration, once it is due: a VPN app starts once its
    /// stop is complete, and is answered once its start is; the SOCKS client once its port is
    /// bound. `start_due` says that the VPN app's start is still to be made.
    pub(super) fn app_configured(
        &mut self,
        app: BuiltinApp,
        change: AppChange,
        start_due: &mut bool,
    ) -> Option<Response> {
        let done = Ok(Reply::AppConfigured { app, change });
        match app {
            BuiltinApp::Vpn(vpn_app) => {
                if !self.vpn.is_settled(vpn_app) {
                    return None;
                }
                if std::mem::take(start_due) {
                    return match self.vpn.start(vpn_app) {
                        Ok(()) if self.vpn.is_settled(vpn_app) => self.vpn_started(vpn_app, done),
                        Ok(()) => None,
                        Err(error) => Some(Err(RequestError::app(error))),
                    };
                }
                if change.starts() {
                    return self.vpn_started(vpn_app, done);
                }
                Some(done)
            }
            BuiltinApp::Socks(SocksApp::Client) if change.starts() => {
                if !self.socks.is_settled() {
                    return None;
                }
                Some(match self.socks.take_start_error() {
                    Some(error) => Err(RequestError::app(error)),
                    None => done,
                })
            }
            BuiltinApp::Socks(_) => Some(done),
        }
    }

    /// `done`, or why the VPN app, whose start is complete, does not run.
    fn vpn_started(&self, app: VpnApp, done: Response) -> Option<Response> {
        if self.vpn.is_running(app) {
            return Some(done);
        }
        Some(Err(match self.vpn.start_error(app) {
            Some(error) => RequestError::app(error),
            None => RequestError::VpnNotRunning(app),
        }))
    }
}

fn split<T>(state: Option<(&T, bool)>) -> (Option<&T>, bool) {
    match state {
        Some((options, running)) => (Some(options), running),
        None => (None, false),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SecretKey;

    fn options(enabled: bool, port: u16) -> socks::ServerOptions {
        socks::ServerOptions {
            enabled,
            port,
            ..socks::ServerOptions::default()
        }
    }

    #[test]
    fn only_the_app_whose_options_changed_restarts() {
        let old = options(true, 1080);
        let moved = options(true, 1081);
        assert_eq!(decide(Some(&old), true, Some(&moved)), AppChange::Restarted);
        assert_eq!(decide(Some(&old), false, Some(&moved)), AppChange::Started);
        let moved_disabled = options(false, 1081);
        assert_eq!(
            decide(Some(&old), true, Some(&moved_disabled)),
            AppChange::Restarted,
            "it ran: it runs on with its new options"
        );
        assert_eq!(
            decide(Some(&old), false, Some(&moved_disabled)),
            AppChange::Configured
        );
        assert_eq!(decide(None, false, Some(&old)), AppChange::Started);
        assert_eq!(
            decide(None, false, Some(&options(false, 1080))),
            AppChange::Configured
        );
        assert_eq!(decide(Some(&old), true, None), AppChange::Removed);
        assert_eq!(decide(Some(&old), false, None), AppChange::Removed);
    }

    #[test]
    fn enabled_alone_says_what_the_next_start_does() {
        let on = options(true, 1080);
        let off = options(false, 1080);
        assert_eq!(decide(Some(&on), true, Some(&off)), AppChange::Unchanged);
        assert_eq!(decide(Some(&off), true, Some(&on)), AppChange::Unchanged);
        assert_eq!(decide(Some(&off), false, Some(&on)), AppChange::Started);
        assert_eq!(decide(Some(&on), false, Some(&off)), AppChange::Unchanged);
    }

    #[test]
    fn every_option_but_enabled_counts() {
        let key = SecretKey::generate().public();
        let client = vpn::ClientOptions {
            start: true,
            tun: "skyvpn0".parse().unwrap(),
            server: key,
            path: None,
            routes: Vec::new(),
            port: 1,
        };
        let other_tun = vpn::ClientOptions {
            tun: "skyvpn1".parse().unwrap(),
            ..client.clone()
        };
        let disabled = vpn::ClientOptions {
            start: false,
            ..client.clone()
        };
        assert!(client.same_but_enabled(&disabled));
        assert!(!client.same_but_enabled(&other_tun));
        assert_eq!(
            decide(Some(&client), true, Some(&other_tun)),
            AppChange::Restarted
        );
    }
}
