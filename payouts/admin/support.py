"""Building blocks shared by the back office's admin pages (payouts, batches, backoffice).

Design:
- Big tables are never counted in full: `CappedCountPaginator` reads PostgreSQL's row
  estimate for an unfiltered list and counts at most `cap` + 1 rows of a filtered one, so a
  list page costs the same with 1,000 or 100,000,000 rows.
- Every money or state change goes through a *confirmed action*: the first POST renders a
  page that says exactly what will happen to each selected object; only the second POST
  (with `confirm=yes` and, where money or state changes, a reason) calls the service.
  Permissions are checked on the server for both steps: an action the user may not run is
  hidden, and a forged POST for it is answered 403 before anything is read or changed.
- Money is shown in its asset's terms (USD 2 decimals, USDT 6, ETH exact) with thousands
  separators, so nobody has to count zeros of a numeric(38, 18) column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db import connection
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from payouts.formatting import amount_display, amount_text

# --- formatting ---------------------------------------------------------------------------

EXPLORER_TX_URL = "https://etherscan.io/tx/{}"
EXPLORER_ADDRESS_URL = "https://etherscan.io/address/{}"


def fmt_decimal(value: Decimal | int | None, places: int | None = None) -> str:
    """The one amount rule (`payouts.formatting`): 2 places are USD, 6 USDT, none given
    means a coin amount (up to 8 decimals shown)."""
    if value is None:
        return "—"
    return amount_text(value, {2: "usd", 6: "usdt"}.get(places, "" if places else "eth"))


def usd(value: Decimal | int | None) -> str:
    return "—" if value is None else f"${amount_text(value, 'usd')}"


def usdt(value: Decimal | int | None) -> str:
    return "—" if value is None else f"{amount_text(value, 'usdt')} USDT"


def eth(value: Decimal | int | None) -> Any:
    """'0.05 ETH'; when the 8 decimals shown round the amount, all 18 are on hover."""
    if value is None:
        return "—"
    shown = amount_display(value, "eth")
    if not shown["rounded"]:
        return f"{shown['text']} ETH"
    return format_html('<span title="{} ETH">{} ETH</span>', shown["full"], shown["text"])


def percent(value: Decimal | None) -> str:
    return "—" if value is None else f"{fmt_decimal(value)} %"


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """'3 h 12 min', '2 d 4 h': how long ago, in the units finance reads at a glance."""
    if moment is None:
        return "—"
    seconds = max(0, int(((now or timezone.now()) - moment).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def datetime_column(field: str, label: str) -> Any:
    """A list column showing a time as 2026-01-05 10:15 (UTC), sortable by the field."""

    @admin.display(description=label, ordering=field)
    def column(model_admin: Any, obj: Any) -> str:
        value = getattr(obj, field)
        return value.strftime("%Y-%m-%d %H:%M") if value else "—"

    return column


def plain_initial(form: Any) -> None:
    """Show stored decimals as typed ('20', not '20.000000000000000000')."""
    for name, value in list(form.initial.items()):
        if isinstance(value, Decimal):
            form.initial[name] = format(value.normalize(), "f") if value else "0"


def short_id(value: object) -> str:
    return str(value)[:8]


# Colours of states: red where a person must act, amber for in-flight, green for done.
STATE_TONES: Mapping[str, str] = {
    "needs_attention": "bad",
    "unmatched": "bad",
    "rejected": "bad",
    "failed": "muted",
    "force_closed": "muted",
    "written_off": "bad",
    "completed": "good",
    "paid": "good",
    "applied": "good",
    "resolved": "good",
    "mined": "good",
    "converted": "good",
    "reverted": "bad",
    "abandoned": "muted",
}


def state_badge(state: str, *, stuck: bool = False) -> SafeString:
    tone = "bad" if stuck else STATE_TONES.get(state, "busy")
    label = f"{state} (stuck)" if stuck else state
    return format_html('<span class="bo-state bo-{}">{}</span>', tone, label)


def _short(value: str) -> str:
    """0x3a9c3a9c…9c3a9c: enough to recognise and to search by (8+ characters)."""
    return value if len(value) <= 20 else f"{value[:10]}…{value[-6:]}"


def _copy_button(value: str) -> SafeString:
    return format_html(
        '<button type="button" class="bo-copy" data-copy="{}" title="Copy {}">copy</button>',
        value,
        value,
    )


def tx_link(tx_hash: str) -> SafeString | str:
    """A transaction hash shortened, whole on hover, with a copy button."""
    if not tx_hash:
        return "—"
    return format_html(
        '<a class="bo-mono" href="{}" target="_blank" rel="noopener noreferrer" title="{}">'
        "{}</a> {}",
        EXPLORER_TX_URL.format(tx_hash),
        tx_hash,
        _short(tx_hash),
        _copy_button(tx_hash),
    )


def address_link(address: str, network: str = "eth") -> SafeString | str:
    if not address:
        return "—"
    if network.lower() != "eth":
        return format_html(
            '<span class="bo-mono" title="{}">{}</span> {}',
            address,
            _short(address),
            _copy_button(address),
        )
    return format_html(
        '<a class="bo-mono" href="{}" target="_blank" rel="noopener noreferrer" title="{}">'
        "{}</a> {}",
        EXPLORER_ADDRESS_URL.format(address),
        address,
        _short(address),
        _copy_button(address),
    )


def admin_url(model: type[Model] | Model, view: str = "changelist", *args: object) -> str:
    opts = model._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)
    except NoReverseMatch:
        return ""


def change_link(model: type[Model], pk: object, text: str | None = None) -> SafeString | str:
    if pk is None:
        return "—"
    url = admin_url(model, "change", pk)
    label = text if text is not None else short_id(pk)
    return format_html('<a href="{}">{}</a>', url, label) if url else label


# --- stuck orders -------------------------------------------------------------------------

# Which run-time setting limits how long an open order may stay in each state.
STUCK_LIMIT_FIELDS: Mapping[str, str] = {
    "reserved": "stuck_reserved_minutes",
    "exchange_created": "stuck_exchange_created_minutes",
    "funds_sent": "stuck_funds_sent_minutes",
    "converting": "stuck_converting_minutes",
}


def stuck_cutoffs(runtime: Any, now: datetime | None = None) -> dict[str, datetime]:
    """state -> the moment before which an order still in that state is stuck."""
    now = now or timezone.now()
    return {
        state: now - timedelta(minutes=getattr(runtime, name))
        for state, name in STUCK_LIMIT_FIELDS.items()
    }


def stuck_q(runtime: Any, now: datetime | None = None) -> Q:
    query = Q()
    for state, cutoff in stuck_cutoffs(runtime, now).items():
        query |= Q(state=state, state_changed_at__lt=cutoff)
    return query


def is_stuck(order: Any, cutoffs: Mapping[str, datetime]) -> bool:
    cutoff = cutoffs.get(order.state)
    return cutoff is not None and order.state_changed_at < cutoff


class StuckFilter(admin.SimpleListFilter):
    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Stuck (older than its state's limit)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() != "yes":
            return queryset
        from payouts.services import runtime_settings_get

        return queryset.filter(stuck_q(runtime_settings_get()))


# --- lists without COUNT(*) ---------------------------------------------------------------


class CappedCountPaginator(Paginator):
    """A paginator that never counts a big table in full.

    Unfiltered: PostgreSQL's planner estimate (pg_class.reltuples, kept fresh by autovacuum).
    Filtered: an exact count of at most `cap` + 1 rows (`SELECT count(*) FROM (... LIMIT n)`).
    Pages past a capped count stay reachable; they are simply empty when the rows run out.
    """

    cap = 10_000

    @cached_property
    def count(self) -> int:  # type: ignore[override]
        queryset = self.object_list
        self._exact = True
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            estimate = _estimated_rows(queryset.model)
            if estimate > self.cap:
                self._exact = False
                return estimate
        counted = queryset.order_by()[: self.cap + 1].count()
        if counted > self.cap:
            self._exact = False
        return counted

    @property
    def count_is_exact(self) -> bool:
        _ = self.count
        return self._exact

    @property
    def count_label(self) -> str:
        """'1,234', 'about 1,000,000' (estimate) or 'more than 10,000' (capped)."""
        if self.count_is_exact:
            return f"{self.count:,}"
        if self.count > self.cap + 1:
            return f"about {self.count:,}"
        return f"more than {self.cap:,}"

    def validate_number(self, number: Any) -> int:
        if self.count_is_exact:
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("That page number is not an integer") from None
        if number < 1:
            raise EmptyPage("That page number is less than 1")
        return number

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        if self.count_is_exact:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom : bottom + self.per_page], number, self)


def _estimated_rows(model: type[Model]) -> int:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
            [model._meta.db_table],
        )
        row = cur.fetchone()
    return int(row[0]) if row else 0


class InputFilter(admin.ListFilter):
    """A free-text filter (a client reference, an object id): listing every choice of a
    10,000-row table in the sidebar would cost a query and a page of links."""

    template = "admin/backoffice/input_filter.html"
    parameter_name = ""
    lookup = ""
    placeholder = ""

    def __init__(
        self, request: HttpRequest, params: dict[str, Any], model: type[Model], model_admin: Any
    ) -> None:
        super().__init__(request, params, model, model_admin)
        value = params.pop(self.parameter_name, None)
        if isinstance(value, list):
            value = value[-1] if value else None
        self.value = (value or "").strip()
        self.other_params = {
            key: values[-1] if isinstance(values, list) else values
            for key, values in request.GET.lists()
            if key not in (self.parameter_name, "p")
        }

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str]:
        return [self.parameter_name]

    def choices(self, changelist: Any) -> Iterable[dict[str, Any]]:
        # The template renders a form, not choices; "All" clears the value.
        yield {
            "selected": not self.value,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "All",
        }

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value:
            return queryset
        return queryset.filter(**{self.lookup: self.value})


class ClientReferenceFilter(InputFilter):
    title = "client reference"
    parameter_name = "client"
    lookup = "client__reference"
    placeholder = "e.g. merchant-0042"


# --- admin mixins -------------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money rows and evidence: viewed, never added, edited or deleted through admin. States
    and amounts change only through the services behind the confirmed actions."""

    list_per_page = 50
    show_full_result_count = False
    # Facet counts would COUNT(*) every filter option over the whole table.
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    change_list_template = "admin/backoffice/change_list.html"
    change_form_template = "admin/backoffice/change_form.html"
    # (header, field path for values_list) of the CSV export; empty: no export.
    export_columns: ClassVar[Sequence[tuple[str, str]]] = ()
    # action name -> the permission needed to see and run it.
    action_permissions: ClassVar[Mapping[str, str]] = {"export_csv": "payouts.export_data"}
    # True: the form may save (only clients, through their services)
    editable: ClassVar[bool] = False
    # related rows the object's page shows (fetched with the object, in one query)
    page_select_related: ClassVar[tuple[str, ...]] = ()

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        """Read once per request: the page's extra sections and Django's own view both need
        the object."""
        memo: dict[Any, Any] = request.__dict__.setdefault("_bo_objects", {})
        key = (self.model, object_id, from_field)
        if key not in memo:
            queryset = self.get_queryset(request)
            if self.page_select_related:
                queryset = queryset.select_related(*self.page_select_related)
            field = (
                self.model._meta.pk
                if from_field is None
                else self.model._meta.get_field(from_field)
            )
            try:
                memo[key] = queryset.get(**{field.name: field.to_python(object_id)})
            except (self.model.DoesNotExist, ValidationError, ValueError):
                memo[key] = None
        return memo[key]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Not even a superuser saves a money row through a form (it would write every field
        # back); lists that are editable (clients) opt in with `editable = True`.
        return self.editable and super().has_change_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        declared = [f.name for f in self.model._meta.concrete_fields]
        return [*declared, *self.readonly_fields]

    def has_export_permission(self, request: HttpRequest) -> bool:
        return bool(self.export_columns) and request.user.has_perm("payouts.export_data")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        for name in list(actions):
            needed = self.action_permissions.get(name)
            forbidden = bool(needed) and not request.user.has_perm(needed)
            if forbidden or (name == "export_csv" and not self.export_columns):
                del actions[name]
        return actions

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST":
            name = request.POST.get("action", "")
            needed = self.action_permissions.get(name)
            # A forged POST: refuse before anything is read or changed.
            if needed and not request.user.has_perm(needed):
                raise PermissionDenied
        context = {**(extra_context or {})}
        if self.has_export_permission(request):
            context["export_url"] = admin_url(self.model, "export")
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {**(extra_context or {})}
        obj = self.get_object(request, object_id)
        if obj is not None:
            context.update(self.page_context(request, obj))
            context["object_actions"] = self.object_actions(request, obj)
        return super().change_view(request, object_id, form_url, extra_context=context)

    def page_context(self, request: HttpRequest, obj: Any) -> dict[str, Any]:
        """Extra sections of the object's page (rows, attempts, audit, ...)."""
        return {}

    def object_actions(self, request: HttpRequest, obj: Any) -> list[dict[str, str]]:
        """The confirmed actions the user may start from the object's page."""
        return []


# --- confirmed actions --------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """A checkbox on the confirmation page (e.g. write the rows off)."""

    name: str
    label: str
    help: str = ""


@dataclass(frozen=True)
class ActionSpec:
    name: str
    verb: str  # "Force-close"
    permission: str
    needs_reason: bool
    summary: str  # one sentence: what the action does in general
    options: tuple[Option, ...] = ()
    max_objects: int = 100
    danger: bool = False


@dataclass
class Outcome:
    done: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def message(self, verb: str) -> tuple[str, int]:
        parts = [f"{verb}: {len(self.done)} done, {len(self.skipped)} skipped."]
        parts += [f"{label}: {detail}." for label, detail in self.done]
        parts += [f"Skipped {label}: {detail}." for label, detail in self.skipped]
        level = messages.WARNING if self.skipped else messages.SUCCESS
        if self.skipped and not self.done:
            level = messages.ERROR
        return " ".join(parts), level


def require_permission(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


# describe(obj) -> dict with "label", "url", "facts" [(name, value)], "effect", "warning"
Describe = Callable[[Any], dict[str, Any]]
# execute(obj, reason, options) -> (done, detail); raise a refusal to skip with its message
Execute = Callable[[Any, str, Mapping[str, bool]], tuple[bool, str]]


def confirmed_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    spec: ActionSpec,
    describe: Describe,
    execute: Execute,
    refusals: tuple[type[Exception], ...],
    inputs: Sequence[Mapping[str, str]] = (),
    hidden: Mapping[str, str] | None = None,
    check: Callable[[HttpRequest], list[str]] | None = None,
) -> HttpResponse | None:
    """Render the confirmation page, or (on `confirm=yes`) run the action per object and
    report what was done and what was skipped, and why.

    `inputs` are extra text fields of the page, `hidden` extra hidden values, and `check`
    returns what still blocks running (shown on the page instead)."""
    require_permission(request, spec.permission)
    objects = list(queryset[: spec.max_objects + 1])
    if len(objects) > spec.max_objects:
        modeladmin.message_user(
            request,
            f"{spec.verb}: select at most {spec.max_objects} at a time; nothing was done.",
            messages.ERROR,
        )
        return None
    errors: list[str] = []
    reason = (request.POST.get("reason") or "").strip()
    options = {option.name: request.POST.get(option.name) == "on" for option in spec.options}
    if request.POST.get("confirm") == "yes":
        if spec.needs_reason and not reason:
            errors.append("A reason is required: it is recorded in the audit trail.")
        if check is not None:
            errors.extend(check(request))
        if not errors:
            outcome = Outcome()
            for obj in objects:
                label = describe(obj)["label"]
                try:
                    done, detail = execute(obj, reason, options)
                except refusals as exc:
                    outcome.skipped.append((label, str(exc)))
                    continue
                (outcome.done if done else outcome.skipped).append((label, detail))
            text, level = outcome.message(spec.verb)
            modeladmin.message_user(request, text, level)
            if len(objects) == 1:
                return HttpResponseRedirect(admin_url(objects[0], "change", objects[0].pk))
            return HttpResponseRedirect(request.get_full_path())
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"{spec.verb}: are you sure?",
        "opts": opts,
        "spec": spec,
        "items": [describe(obj) for obj in objects],
        "selected": [str(obj.pk) for obj in objects],
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "reason": reason,
        "options": [(option, options.get(option.name, False)) for option in spec.options],
        "errors": errors,
        "cancel_url": (
            admin_url(objects[0], "change", objects[0].pk)
            if len(objects) == 1
            else admin_url(modeladmin.model)
        ),
        "inputs": inputs,
        "hidden": dict(hidden or {}),
    }
    return TemplateResponse(request, "admin/backoffice/confirm_action.html", context)


def facts_html(facts: Iterable[tuple[str, Any]]) -> SafeString:
    return format_html_join("", "<dt>{}</dt><dd>{}</dd>", ((k, v) for k, v in facts))
