//! What every reconcile of an AgentDeployment reads: the operator-wide context, the
//! caches, and when each managed database was last checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::backoff::ObjectKey;
use crate::context::Context;

use super::service_monitors::ServiceMonitors;
use super::watches::Stores;

/// Reconcile context of the AgentDeployment controller.
pub struct AgentContext {
    /// Shared by both controllers.
    pub shared: Arc<Context>,
    /// Caches of children, pods and channels.
    pub stores: Stores,
    /// When each agent's managed database was last found in order.
    pub database_checked: Mutex<HashMap<ObjectKey, Instant>>,
    /// The cached ServiceMonitors (while their CRD is installed); without them the
    /// apply reads an agent's ServiceMonitor live.
    pub service_monitors: Option<ServiceMonitors>,
}

impl AgentContext {
    /// A context over `stores`.
    pub fn new(shared: Arc<Context>, stores: Stores) -> Self {
        Self {
            shared,
            stores,
            database_checked: Mutex::new(HashMap::new()),
            service_monitors: None,
        }
    }

    /// The same, with the ServiceMonitor cache.
    pub fn with_service_monitors(mut self, monitors: ServiceMonitors) -> Self {
        self.service_monitors = Some(monitors);
        self
    }
}
