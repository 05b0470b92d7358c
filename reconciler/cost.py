"""What running workspaces cost, from the project's hourly prices (`project.yaml` `spec.prices`). Pure.

A workspace costs what its container asks for (requests = limits) for every hour it runs: CPUs
times the CPU price, GiB of memory times the memory price, GPUs (whole, or a Run:ai fraction)
times the GPU price of its node pool (`prices.gpuByPool`, else `prices.gpu`). A stopped
workspace (zero replicas) costs nothing here (its volume is billed elsewhere, if at all). A month
is 730 hours (365 * 24 / 12).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from reconciler.fields import parse_quantity
from reconciler.models import ComputeResource, NodePool, Prices
from reconciler.placement import GPU_FRACTION_ANNOTATION, gpu_text, is_fraction
from reconciler.plan import Action, Plan
from reconciler.render import CONTAINER_NAME, GPU_RESOURCE

HOURS_PER_MONTH = 730
_GIB = Decimal(2**30)


@dataclass(frozen=True)
class WorkspaceCost:
    """One changed workspace's cost per running hour, before and after the change."""

    name: str
    action: Action
    before: Decimal
    after: Decimal
    state: str
    """"running" or "stopped" after the change; "" when it is deleted."""


@dataclass(frozen=True)
class PlanCost:
    """The cost section of a plan: the changed workspaces and the project's totals, per hour."""

    currency: str
    workspaces: list[WorkspaceCost]
    total_before: Decimal
    total_after: Decimal


def hourly(resources: Mapping[str, Any], prices: Prices, *, gpu_fraction: Decimal = Decimal(0),
           pool: str | None = None) -> Decimal:
    """The price of one running hour of a container's resources (its limits, else its requests).

    `gpu_fraction`: a Run:ai GPU fraction (an annotation, not a resource); `pool`: the node pool
    it runs on, whose `prices.gpuByPool` price applies to its GPUs."""
    amounts = resources.get("limits") or resources.get("requests") or {}
    cpu = _quantity(amounts.get("cpu"))
    memory = _quantity(amounts.get("memory")) / _GIB
    gpu = _quantity(amounts.get(GPU_RESOURCE)) + gpu_fraction
    gpu_price = prices.gpu_by_pool.get(pool or "", prices.gpu)
    return cpu * Decimal(str(prices.cpu)) + memory * Decimal(str(prices.memory_gib)) + gpu * Decimal(str(gpu_price))


def deployment_hourly(deployment: Mapping[str, Any] | None, prices: Prices,
                      pools: Mapping[str, NodePool] | None = None) -> Decimal:
    """The price of one hour of a workspace's Deployment as it is (0 when absent or stopped).

    `pools`: project.yaml's nodePools; the pool is the one whose nodeSelector the pod carries."""
    if not deployment:
        return Decimal(0)
    spec = deployment.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if not replicas:
        return Decimal(0)
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    containers = pod.get("containers") or []
    fraction = _fraction(((template.get("metadata") or {}).get("annotations") or {}).get(GPU_FRACTION_ANNOTATION))
    pool = _pool(pod.get("nodeSelector") or {}, pools or {})
    total = Decimal(0)
    for container in containers:
        if container.get("name") == CONTAINER_NAME or len(containers) == 1:
            total += hourly(container.get("resources") or {}, prices, gpu_fraction=fraction, pool=pool)
    return total * Decimal(int(replicas))


def compute_hourly(compute: ComputeResource, prices: Prices) -> Decimal:
    """One running hour of a workspace on `compute` as `render` gives it (requests = limits), without
    reading its Deployment: for the workspaces a `--since` plan did not read."""
    gpu = compute.spec.gpu
    amounts = {"cpu": compute.spec.cpu, "memory": compute.spec.memory}
    if gpu > 0 and not is_fraction(gpu):
        amounts[GPU_RESOURCE] = gpu_text(gpu)
    fraction = Decimal(gpu_text(gpu)) if is_fraction(gpu) else Decimal(0)
    return hourly({"limits": amounts}, prices, gpu_fraction=fraction, pool=compute.spec.node_pool)


def _pool(selector: Mapping[str, str], pools: Mapping[str, NodePool]) -> str | None:
    """The node pool a pod's nodeSelector picks: the one with the most labels, all of them in the selector."""
    matches = [(len(p.node_selector), name) for name, p in pools.items()
               if p.node_selector and all(selector.get(k) == v for k, v in p.node_selector.items())]
    return max(matches)[1] if matches else None


def _fraction(value: object) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except ArithmeticError:
        return Decimal(0)


def plan_cost(plan: Plan, prices: Prices | None, pools: Mapping[str, NodePool] | None = None,
              unread: Decimal = Decimal(0), rendered: Mapping[str, Decimal] | None = None) -> PlanCost | None:
    """The cost section of `plan`, or None when the project sets no prices.

    `unread`: what the running workspaces a `--since` plan did not read cost per hour (in both totals);
    `rendered`: per running workspace, `compute_hourly` of its compute block, for an unchanged
    Deployment the plan kept no body of (`compute_plan(lean=True)`)."""
    if prices is None:
        return None
    rows: list[WorkspaceCost] = []
    before_total = after_total = unread
    for w in plan.workspaces:
        deployment = next((o for o in w.objects if o.id.kind == "Deployment"), None)
        live = deployment.live if deployment is not None else None
        desired = deployment.desired if deployment is not None else None
        before = deployment_hourly(live, prices, pools)
        if deployment is not None and deployment.action is Action.UNCHANGED and desired is None and live is None:
            before = after = (rendered or {}).get(w.name, Decimal(0))
        elif w.action is Action.CONFLICT:
            after = before  # left alone: it keeps costing what it costs
        elif w.action is Action.DELETE:
            after = Decimal(0)
        else:
            after = deployment_hourly(desired, prices, pools)
        before_total += before
        after_total += after
        if w.action in (Action.CREATE, Action.UPDATE, Action.DELETE):
            rows.append(WorkspaceCost(w.name, w.action, before, after, w.state))
    return PlanCost(prices.currency, rows, before_total, after_total)


@dataclass(frozen=True)
class RunningCost:
    """What the running workspaces cost now (`reconcile status`)."""

    currency: str
    hourly: Decimal
    workspaces: int

    def as_json(self) -> dict[str, Any]:
        """The `cost` object of `reconcile status --output json`."""
        return {"currency": self.currency, "perHour": float(self.hourly), "perMonth": float(monthly(self.hourly)),
                "runningWorkspaces": self.workspaces}

    def line(self) -> str:
        """`cost: USD 0.48/h, USD 350.40/month (730 h) for 2 running workspaces`."""
        noun = "running workspace" if self.workspaces == 1 else "running workspaces"
        return (f"cost: {money(self.hourly, self.currency)}/h, {money(monthly(self.hourly), self.currency)}/month "
                f"({HOURS_PER_MONTH} h) for {self.workspaces} {noun}")


def running_cost(deployments: Iterable[Mapping[str, Any]], prices: Prices,
                 pools: Mapping[str, NodePool] | None = None) -> RunningCost:
    """The hourly cost of these (running) Deployments, as they are."""
    listed = list(deployments)
    total = sum((deployment_hourly(d, prices, pools) for d in listed), Decimal(0))
    return RunningCost(prices.currency, total, len(listed))


def money(amount: Decimal, currency: str) -> str:
    """`USD 1.23` (cents; four decimals under one cent so a small price does not read as zero)."""
    if amount != 0 and abs(amount) < Decimal("0.01"):
        return f"{currency} {amount:.4f}"
    return f"{currency} {amount:,.2f}"


def monthly(amount: Decimal) -> Decimal:
    """An hourly amount over a 730-hour month."""
    return amount * HOURS_PER_MONTH


def _quantity(value: object) -> Decimal:
    if value is None:
        return Decimal(0)
    try:
        return parse_quantity(str(value))
    except ValueError:
        return Decimal(0)
