"""The arbiter between training and serving: pools and lending, the power cap, admission, the deployment gate.

Policies are pure functions of a `FleetState` (policy.decide); executors (governor.executors) carry out the actions.
"""

from garrison.governor.admission import AdmissionDecision, TenantBudget, admit
from garrison.governor.cost import DeviceProfile, Sample, calibrate_profile, estimate_cost
from garrison.governor.gate import deployment_gate
from garrison.governor.policy import decide
from garrison.governor.state import (
    Action,
    Alert,
    ControlMemory,
    Decision,
    DeviceState,
    FinishReclaim,
    FleetState,
    GateVerdict,
    GovernorConfig,
    GovernorConfigError,
    InFlight,
    Lend,
    MarkLost,
    Reclaim,
    RejectJob,
    ServingState,
    SetAdmission,
    SetConcurrency,
    SetPowerLimit,
    SetQuality,
    StartTraining,
    ThrottleTraining,
    TrainingJobState,
)

__all__ = [
    "Action",
    "AdmissionDecision",
    "Alert",
    "ControlMemory",
    "Decision",
    "DeviceProfile",
    "DeviceState",
    "FinishReclaim",
    "FleetState",
    "GateVerdict",
    "GovernorConfig",
    "GovernorConfigError",
    "InFlight",
    "Lend",
    "MarkLost",
    "Reclaim",
    "RejectJob",
    "Sample",
    "ServingState",
    "SetAdmission",
    "SetConcurrency",
    "SetPowerLimit",
    "SetQuality",
    "StartTraining",
    "TenantBudget",
    "ThrottleTraining",
    "TrainingJobState",
    "admit",
    "calibrate_profile",
    "decide",
    "deployment_gate",
    "estimate_cost",
]
