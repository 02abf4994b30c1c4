"""The private network workers live in: custom-mode VPC, subnet with Private Google Access, Cloud NAT, and an
SSH firewall that admits only Google's IAP range (plus ranges the stack adds).

Workers have no public address: NAT lets them pull images and clone; IAP (or a VPN in sshSourceRanges) lets
the developer in. An existing network can be used instead; then only the firewall rule is added to it, in the
network's own project (a Shared VPC host project), since GCE refuses a rule that references another project's
network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from offload.errors import ConfigError
from offload.infra.project import depends_on_of
from offload.stackconfig import DEFAULT_SUBNET_CIDR, parse_ssh_source_ranges
from offload.outputs import IAP_RANGE


@dataclass(frozen=True)
class NetworkArgs:
    """Where and how: the region, the subnet range, who may reach SSH and on which instances."""

    project: str
    region: str
    ssh_source_ranges: tuple[str, ...] = (IAP_RANGE,)
    subnet_cidr: str = DEFAULT_SUBNET_CIDR
    existing_network: str | None = None
    existing_subnetwork: str | None = None
    # Instances running as this service account get the SSH rule (stronger than a network tag, which anyone
    # who may edit an instance can add); None adds no rule (workstations need none).
    ssh_target_service_account: pulumi.Input[str] | None = None

    def __post_init__(self) -> None:
        # The IAP range always stays first; anything else must pass the same checks as the stack config.
        object.__setattr__(self, "ssh_source_ranges", parse_ssh_source_ranges(list(self.ssh_source_ranges)))
        if (self.existing_network is None) != (self.existing_subnetwork is None):
            raise ConfigError("an existing network needs both a network and a subnetwork")

    @property
    def firewall_project(self) -> str:
        """The project that owns the network, where its firewall rules live: a Shared VPC's host project when
        the existing network is given as projects/HOST/global/networks/NAME."""
        return network_project(self.existing_network) or self.project


_NETWORK_PROJECT = re.compile(r"(?:https://[^/]+/compute/v1/)?projects/(?P<project>[^/]+)/global/networks/[^/]+")


def network_project(network: str | None) -> str | None:
    """The project named in a network's resource path; None for a bare name (the stack's own project)."""
    m = _NETWORK_PROJECT.fullmatch(network or "")
    return m["project"] if m else None


class Network(pulumi.ComponentResource):
    """VPC, subnet, router and NAT (unless an existing network is given), and the SSH firewall rule."""

    network_id: pulumi.Output[str]
    subnetwork_id: pulumi.Output[str]
    # What a worker's first boot needs in place: the NAT it pulls through and the rule that lets SSH in.
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("offload:infra:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on_of(opts))
        outputs: dict[str, object] = {}
        self.ready = []
        if args.existing_network and args.existing_subnetwork:
            self.network_id = pulumi.Output.from_input(args.existing_network)
            self.subnetwork_id = pulumi.Output.from_input(args.existing_subnetwork)
        else:
            vpc = gcp.compute.Network(
                f"{name}-vpc", project=args.project, auto_create_subnetworks=False, routing_mode="REGIONAL",
                description="offload workers: private, no default subnets", opts=child)
            subnet = gcp.compute.Subnetwork(
                f"{name}-subnet", project=args.project, region=args.region, network=vpc.id,
                ip_cidr_range=args.subnet_cidr, private_ip_google_access=True,
                description="offload workers; Private Google Access reaches Google APIs without public IPs",
                opts=child)
            router = gcp.compute.Router(f"{name}-router", project=args.project, region=args.region,
                                        network=vpc.id, opts=child)
            nat = gcp.compute.RouterNat(
                f"{name}-nat", project=args.project, region=args.region, router=router.name,
                nat_ip_allocate_option="AUTO_ONLY",
                source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
                subnetworks=[gcp.compute.RouterNatSubnetworkArgs(name=subnet.id,
                                                                 source_ip_ranges_to_nats=["ALL_IP_RANGES"])],
                log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
                opts=child)
            self.network_id = vpc.id
            self.subnetwork_id = subnet.id
            self.ready.append(nat)
            outputs.update(router=router.name, nat=nat.name)
        if args.ssh_target_service_account is not None:
            firewall = gcp.compute.Firewall(
                f"{name}-ssh", project=args.firewall_project, network=self.network_id, direction="INGRESS",
                priority=1000, allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=["22"])],
                source_ranges=list(args.ssh_source_ranges),
                target_service_accounts=[args.ssh_target_service_account],
                description="SSH to offload workers: IAP TCP forwarding and the stack's sshSourceRanges only",
                log_config=gcp.compute.FirewallLogConfigArgs(metadata="INCLUDE_ALL_METADATA"),
                opts=child)
            self.ready.append(firewall)
            outputs["ssh_firewall"] = firewall.name
        self.register_outputs({"network": self.network_id, "subnetwork": self.subnetwork_id, **outputs})
