//! EC2 "EC2 Instance State-change Notification" and "EC2 Spot Instance Interruption Warning".

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Ec2StateChange {
    pub instance_id: String,
    pub state: Ec2State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ec2State {
    Pending,
    Running,
    ShuttingDown,
    Stopping,
    Stopped,
    Terminated,
}

impl Ec2State {
    pub fn as_str(self) -> &'static str {
        match self {
            Ec2State::Pending => "pending",
            Ec2State::Running => "running",
            Ec2State::ShuttingDown => "shutting-down",
            Ec2State::Stopping => "stopping",
            Ec2State::Stopped => "stopped",
            Ec2State::Terminated => "terminated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SpotInterruption {
    pub instance_id: String,
    /// `terminate`, `stop` or `hibernate`.
    pub instance_action: String,
}
