//! The part of the Kubernetes OpenAPI schema the stand-in needs to behave
//! like the real server's structured merge: which fields a type declares (an
//! undeclared one is the real server's 500 "field not declared in schema"),
//! which maps are granular (labels, ConfigMap data) and which are atomic (a
//! label selector), and which lists merge by key (containers by `name`,
//! volume mounts by `mountPath`, ports by `containerPort`+`protocol`).
//! Taken from the `x-kubernetes-list-type`/`-list-map-keys`/`-map-type`
//! markers of the core/v1 and apps/v1 types; types the tests never send are
//! `Open` (any field, each replaced whole).

/// How a value merges and is owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A string, number or boolean.
    Scalar,
    /// A resource quantity (`500m`, `1Gi`), stored in canonical form.
    Quantity,
    /// An object with declared fields.
    Struct(&'static str),
    /// An object whose fields are not declared here: any field, each atomic.
    Open,
    /// A granular map of scalars (labels, annotations, ConfigMap data).
    StrMap,
    /// A granular map of quantities (resource limits and requests).
    QuantityMap,
    /// A list merged by the values of its key fields.
    Assoc(&'static [&'static str], &'static str),
    /// A list of scalars with set semantics.
    Set,
    /// Replaced whole (lists without keys, label selectors, affinity).
    Atomic,
}

use Ty::{Assoc, Atomic, Open, Quantity, QuantityMap, Scalar, Set, StrMap, Struct};

type Fields = &'static [(&'static str, Ty)];

const OBJECT_META: Fields = &[
    ("name", Scalar),
    ("generateName", Scalar),
    ("namespace", Scalar),
    ("uid", Scalar),
    ("resourceVersion", Scalar),
    ("generation", Scalar),
    ("creationTimestamp", Scalar),
    ("deletionTimestamp", Scalar),
    ("deletionGracePeriodSeconds", Scalar),
    ("labels", StrMap),
    ("annotations", StrMap),
    ("ownerReferences", Assoc(&["uid"], "OwnerReference")),
    ("finalizers", Set),
    ("managedFields", Atomic),
    ("selfLink", Scalar),
];

const DEPLOYMENT_SPEC: Fields = &[
    ("replicas", Scalar),
    ("selector", Atomic),
    ("template", Struct("PodTemplateSpec")),
    ("strategy", Struct("DeploymentStrategy")),
    ("minReadySeconds", Scalar),
    ("revisionHistoryLimit", Scalar),
    ("paused", Scalar),
    ("progressDeadlineSeconds", Scalar),
];

const POD_SPEC: Fields = &[
    ("volumes", Assoc(&["name"], "Volume")),
    ("initContainers", Assoc(&["name"], "Container")),
    ("containers", Assoc(&["name"], "Container")),
    ("ephemeralContainers", Assoc(&["name"], "Open")),
    ("restartPolicy", Scalar),
    ("terminationGracePeriodSeconds", Scalar),
    ("activeDeadlineSeconds", Scalar),
    ("dnsPolicy", Scalar),
    ("nodeSelector", StrMap),
    ("serviceAccountName", Scalar),
    ("serviceAccount", Scalar),
    ("automountServiceAccountToken", Scalar),
    ("nodeName", Scalar),
    ("hostNetwork", Scalar),
    ("hostPID", Scalar),
    ("hostIPC", Scalar),
    ("shareProcessNamespace", Scalar),
    ("securityContext", Struct("PodSecurityContext")),
    ("imagePullSecrets", Assoc(&["name"], "LocalObjectReference")),
    ("hostname", Scalar),
    ("subdomain", Scalar),
    ("affinity", Atomic),
    ("schedulerName", Scalar),
    ("tolerations", Atomic),
    ("hostAliases", Assoc(&["ip"], "Open")),
    ("priorityClassName", Scalar),
    ("priority", Scalar),
    ("dnsConfig", Atomic),
    ("readinessGates", Atomic),
    ("runtimeClassName", Scalar),
    ("enableServiceLinks", Scalar),
    ("preemptionPolicy", Scalar),
    ("overhead", QuantityMap),
    (
        "topologySpreadConstraints",
        Assoc(&["topologyKey", "whenUnsatisfiable"], "Open"),
    ),
    ("setHostnameAsFQDN", Scalar),
    ("os", Atomic),
    ("hostUsers", Scalar),
    ("schedulingGates", Assoc(&["name"], "Open")),
    ("resourceClaims", Assoc(&["name"], "Open")),
    ("resources", Struct("ResourceRequirements")),
];

const CONTAINER: Fields = &[
    ("name", Scalar),
    ("image", Scalar),
    ("command", Atomic),
    ("args", Atomic),
    ("workingDir", Scalar),
    ("ports", Assoc(&["containerPort", "protocol"], "ContainerPort")),
    ("envFrom", Atomic),
    ("env", Assoc(&["name"], "EnvVar")),
    ("resources", Struct("ResourceRequirements")),
    ("resizePolicy", Atomic),
    ("restartPolicy", Scalar),
    ("volumeMounts", Assoc(&["mountPath"], "VolumeMount")),
    ("volumeDevices", Assoc(&["devicePath"], "Open")),
    ("livenessProbe", Struct("Probe")),
    ("readinessProbe", Struct("Probe")),
    ("startupProbe", Struct("Probe")),
    ("lifecycle", Atomic),
    ("terminationMessagePath", Scalar),
    ("terminationMessagePolicy", Scalar),
    ("imagePullPolicy", Scalar),
    ("securityContext", Struct("SecurityContext")),
    ("stdin", Scalar),
    ("stdinOnce", Scalar),
    ("tty", Scalar),
];

const VOLUME: Fields = &[
    ("name", Scalar),
    ("configMap", Struct("ConfigMapVolumeSource")),
    ("secret", Struct("SecretVolumeSource")),
    ("persistentVolumeClaim", Struct("PersistentVolumeClaimVolumeSource")),
    ("emptyDir", Struct("EmptyDirVolumeSource")),
    ("hostPath", Struct("HostPathVolumeSource")),
    ("projected", Open),
    ("downwardAPI", Open),
    ("csi", Atomic),
    ("nfs", Atomic),
    ("ephemeral", Atomic),
    ("image", Atomic),
];

const SECURITY_CONTEXT: Fields = &[
    ("capabilities", Struct("Capabilities")),
    ("privileged", Scalar),
    ("seLinuxOptions", Atomic),
    ("windowsOptions", Atomic),
    ("runAsUser", Scalar),
    ("runAsGroup", Scalar),
    ("runAsNonRoot", Scalar),
    ("readOnlyRootFilesystem", Scalar),
    ("allowPrivilegeEscalation", Scalar),
    ("procMount", Scalar),
    ("seccompProfile", Struct("SeccompProfile")),
    ("appArmorProfile", Atomic),
];

const POD_SECURITY_CONTEXT: Fields = &[
    ("runAsUser", Scalar),
    ("runAsGroup", Scalar),
    ("runAsNonRoot", Scalar),
    ("fsGroup", Scalar),
    ("fsGroupChangePolicy", Scalar),
    ("supplementalGroups", Atomic),
    ("supplementalGroupsPolicy", Scalar),
    ("seccompProfile", Struct("SeccompProfile")),
    ("seLinuxOptions", Atomic),
    ("seLinuxChangePolicy", Scalar),
    ("sysctls", Atomic),
    ("windowsOptions", Atomic),
    ("appArmorProfile", Atomic),
];

const PROBE: Fields = &[
    ("exec", Atomic),
    ("httpGet", Struct("HTTPGetAction")),
    ("tcpSocket", Atomic),
    ("grpc", Atomic),
    ("initialDelaySeconds", Scalar),
    ("timeoutSeconds", Scalar),
    ("periodSeconds", Scalar),
    ("successThreshold", Scalar),
    ("failureThreshold", Scalar),
    ("terminationGracePeriodSeconds", Scalar),
];

/// The declared fields of a struct type.
pub fn fields(name: &str) -> Option<Fields> {
    Some(match name {
        "ObjectMeta" => OBJECT_META,
        "OwnerReference" => &[
            ("apiVersion", Scalar),
            ("kind", Scalar),
            ("name", Scalar),
            ("uid", Scalar),
            ("controller", Scalar),
            ("blockOwnerDeletion", Scalar),
        ],
        "Deployment" => &[
            ("apiVersion", Scalar),
            ("kind", Scalar),
            ("metadata", Struct("ObjectMeta")),
            ("spec", Struct("DeploymentSpec")),
            ("status", Open),
        ],
        "DeploymentSpec" => DEPLOYMENT_SPEC,
        "DeploymentStrategy" => &[("type", Scalar), ("rollingUpdate", Struct("RollingUpdateDeployment"))],
        "RollingUpdateDeployment" => &[("maxUnavailable", Scalar), ("maxSurge", Scalar)],
        "PodTemplateSpec" => &[("metadata", Struct("ObjectMeta")), ("spec", Struct("PodSpec"))],
        "PodSpec" => POD_SPEC,
        "Container" => CONTAINER,
        "ContainerPort" => &[
            ("name", Scalar),
            ("hostPort", Scalar),
            ("containerPort", Scalar),
            ("protocol", Scalar),
            ("hostIP", Scalar),
        ],
        "EnvVar" => &[
            ("name", Scalar),
            ("value", Scalar),
            ("valueFrom", Struct("EnvVarSource")),
        ],
        "EnvVarSource" => &[
            ("fieldRef", Struct("ObjectFieldSelector")),
            ("resourceFieldRef", Open),
            ("configMapKeyRef", Struct("KeySelector")),
            ("secretKeyRef", Struct("KeySelector")),
        ],
        "ObjectFieldSelector" => &[("apiVersion", Scalar), ("fieldPath", Scalar)],
        "KeySelector" => &[("name", Scalar), ("key", Scalar), ("optional", Scalar)],
        "LocalObjectReference" => &[("name", Scalar)],
        "ResourceRequirements" => &[
            ("limits", QuantityMap),
            ("requests", QuantityMap),
            ("claims", Assoc(&["name"], "Open")),
        ],
        "VolumeMount" => &[
            ("name", Scalar),
            ("readOnly", Scalar),
            ("recursiveReadOnly", Scalar),
            ("mountPath", Scalar),
            ("subPath", Scalar),
            ("mountPropagation", Scalar),
            ("subPathExpr", Scalar),
        ],
        "Volume" => VOLUME,
        "ConfigMapVolumeSource" => &[
            ("name", Scalar),
            ("items", Atomic),
            ("defaultMode", Scalar),
            ("optional", Scalar),
        ],
        "SecretVolumeSource" => &[
            ("secretName", Scalar),
            ("items", Atomic),
            ("defaultMode", Scalar),
            ("optional", Scalar),
        ],
        "PersistentVolumeClaimVolumeSource" => &[("claimName", Scalar), ("readOnly", Scalar)],
        "EmptyDirVolumeSource" => &[("medium", Scalar), ("sizeLimit", Quantity)],
        "HostPathVolumeSource" => &[("path", Scalar), ("type", Scalar)],
        "SecurityContext" => SECURITY_CONTEXT,
        "PodSecurityContext" => POD_SECURITY_CONTEXT,
        "Capabilities" => &[("add", Atomic), ("drop", Atomic)],
        "SeccompProfile" => &[("type", Scalar), ("localhostProfile", Scalar)],
        "Probe" => PROBE,
        "HTTPGetAction" => &[
            ("path", Scalar),
            ("port", Scalar),
            ("host", Scalar),
            ("scheme", Scalar),
            ("httpHeaders", Atomic),
        ],
        "ConfigMap" => &[
            ("apiVersion", Scalar),
            ("kind", Scalar),
            ("metadata", Struct("ObjectMeta")),
            ("data", StrMap),
            ("binaryData", StrMap),
            ("immutable", Scalar),
        ],
        "Secret" => &[
            ("apiVersion", Scalar),
            ("kind", Scalar),
            ("metadata", Struct("ObjectMeta")),
            ("data", StrMap),
            ("stringData", StrMap),
            ("type", Scalar),
            ("immutable", Scalar),
        ],
        "ServiceAccount" => &[
            ("apiVersion", Scalar),
            ("kind", Scalar),
            ("metadata", Struct("ObjectMeta")),
            ("secrets", Atomic),
            ("imagePullSecrets", Atomic),
            ("automountServiceAccountToken", Scalar),
        ],
        "WithSpec" => &[
            ("apiVersion", Scalar),
            ("kind", Scalar),
            ("metadata", Struct("ObjectMeta")),
            ("spec", Open),
            ("status", Open),
        ],
        _ => return None,
    })
}

/// The type of field `name` in struct `ty`; `None` when the struct does not declare it.
pub fn field(ty: &str, name: &str) -> Option<Ty> {
    if ty == "Open" {
        return Some(Atomic);
    }
    fields(ty)?.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Whether a value of this type is owned as a whole (no finer fields).
pub fn is_atomic(ty: Ty) -> bool {
    matches!(ty, Scalar | Quantity | Atomic)
}

/// Whether the map itself is a member of a field set beside its keys (`.`).
pub fn is_granular_map(ty: Ty) -> bool {
    matches!(ty, StrMap | QuantityMap)
}
