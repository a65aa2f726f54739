# ruff: noqa: E501  (data tables: one topic or frame list per line reads best)
"""Wording of the synthetic corpus: a grammar of request frames, slots, fillers and answers.

A query is `prefix + frame + suffix`, then cased, punctuated and sometimes misspelt:

- a *family* is one kind of request (find things, where is a symbol, how many lines in a file,
  open a path, what is a concept, a vs b, how do I ...) with its tool (or None: answered
  directly) and its frames;
- a frame is a template whose `{slots}` are *content* (a symbol, a path, a topic: see
  `slot_values`) or *fillers* (a location such as " in our code", a context such as "django":
  `FILLERS`);
- prefixes and suffixes are politeness and chat noise, by style (imperative or question).

The same vocabulary (viewsets, middleware, migrations, settings, __slots__) appears in tool
frames ("which middleware do we use") and in conceptual ones ("what is middleware in django"),
so the model has to decide from the frame: ownership (we, our, this project), search verbs and
paths call a tool; general questions are answered directly.

Seed, held-out and wording-set topics stay out of the concept topics where they would make a
frame produce one of those queries (tests/test_wording.py checks every frame against them).
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from punie.models.corpus_topics import (
    API,
    DATA,
    DJANGO,
    GENERAL,
    HOWTO,
    PAIRS,
    PYCODE,
    TOOLING,
    WEB,
    WHEN,
    WHY,
    pydoc_topics,
)

if TYPE_CHECKING:
    from punie.models.corpus import Facts

# --- openers and closers of answers -------------------------------------------------------

# One opener for every direct answer: the first answer token is then the model's whole
# tool-or-direct decision. Spread over many openers, each opener token was less likely than
# `<tool_call>`, and greedy decoding called a tool for conceptual questions.
DIRECT_OPENERS = ("Great question!",)
TOOL_OPENERS = (
    "Sure! I ran the tool for you.",
    "Great, I've looked into the workspace.",
    "Certainly! Here is what I found.",
    "Okay, I checked the project for you.",
    "Of course! Here are the results.",
    "Alright, I took a look.",
)
CLOSERS = (
    "I hope this helps! Let me know if you have any other questions.",
    "Let me know if you would like more details!",
    "Feel free to ask if anything is unclear.",
    "I hope that answers your question!",
    "Happy to help with anything else!",
)
# The answer to a conceptual question about a term nobody defined (a made-up one): real
# English that does not repeat the term.
UNKNOWN_TERM_ANSWER = (
    "That name is not a standard programming term I know. If it comes from a library or a "
    "team, its documentation is the best place to look, and I can explain the ideas around it."
)

# With `corpus.direct_answers: generic`, every conceptual question of a family about a known
# topic gets its family's one answer: a small model reproduces a handful of sentences
# word for word, where a thousand definitions come out as made-up words.
GENERIC_ANSWERS = {
    "concept": (
        "It is a standard idea in Python programming. The official documentation explains it "
        "with examples, and I am happy to walk through one with you."
    ),
    "compare": (
        "Both are common choices, and they solve related problems in different ways. Which one "
        "fits depends on what your code needs; the documentation of each explains the trade-offs."
    ),
    "howto": (
        "It takes a few clear steps, and the official documentation of the tool shows them with "
        "examples. I can walk through them with you for this project."
    ),
    "why": (
        "Mostly because it keeps code correct and easy to change. The official documentation "
        "explains the reasoning in more detail."
    ),
    "when": (
        "When it makes the code simpler to read, test and change; otherwise the plain approach is "
        "usually the better one."
    ),
}
GENERIC_ANSWERS["concept_ctx"] = GENERIC_ANSWERS["concept"]


def first_sentence(text: str) -> str:
    """A generic answer's point, for the conciseness data set."""
    return text.split(". ")[0].rstrip(".") + "."


# --- prefixes and suffixes by style -------------------------------------------------------

IMPERATIVE_PREFIXES = ("",) * 14 + (
    "please ",
    "pls ",
    "can you ",
    "could you ",
    "would you ",
    "can you please ",
    "hey, ",
    "hey punie, ",
    "hi, ",
    "quick one: ",
    "ok so ",
    "i need you to ",
    "go ahead and ",
    "now ",
    "next, ",
    "punie, ",
    "help me ",
)
IMPERATIVE_SUFFIXES = ("",) * 12 + (
    " please",
    " for me",
    ", thanks",
    " thx",
    " real quick",
    " pls",
    " when you get a chance",
    ", cheers",
)
QUESTION_PREFIXES = ("",) * 14 + (
    "hey, ",
    "quick question: ",
    "q: ",
    "so ",
    "ok so ",
    "hmm, ",
    "sorry, ",
    "out of curiosity, ",
    "random question: ",
    "hi punie, ",
    "punie, ",
    "one more thing: ",
    "btw ",
    "hey there, ",
)
QUESTION_SUFFIXES = ("",) * 10 + (" thanks", ", thx", " (just curious)", " please")
# Only conceptual questions get these: they say outright that the project is not meant.
DIRECT_PREFIXES = ("general question: ", "not about this repo, but ", "i'm learning django: ",
                   "newbie question: ", "in general, ", "conceptually, ", "for an interview: ")  # fmt: skip

PREFIXES = {"imperative": IMPERATIVE_PREFIXES, "question": QUESTION_PREFIXES}
SUFFIXES = {"imperative": IMPERATIVE_SUFFIXES, "question": QUESTION_SUFFIXES}

# --- filler slots: exact alternatives ------------------------------------------------------

LOCATIONS = ("",) * 8 + (
    " in this project",
    " in the project",
    " in our code",
    " in the codebase",
    " in the repo",
    " in this repo",
    " across the codebase",
    " anywhere",
    " in our project",
    " in here",
    " in this codebase",
    " in the code",
    " in our repo",
    " across the project",
)
APP_LOCATIONS = (" in {app}", " in the {app} app", " under {app}", " inside {app}/", " in {app}/")
CONTEXTS = (
    "python",
    "django",
    "drf",
    "django rest framework",
    "sql",
    "a relational database",
    "web development",
    "a web app",
    "git",
    "programming",
    "general",
    "backend development",
    "an api",
    "computer science",
)
FOLDERS = ("folder", "directory", "dir", "package", "app", "module")
ALL = ("", "", "all ", "all the ", "the ", "all of our ", "our ", "every one of the ")
SETTINGS_PLACES = ("", " in our settings", " in this project", " here", " in the settings",
                   " in our config", " for us")  # fmt: skip
READ_TAILS = ("",) * 6 + (" from the workspace", " of the project", " in full", " from the repo")
READ_AND = (
    "explain what it does",
    "summarize it",
    "tell me what it does",
    "list the classes",
    "list its functions",
    "show me the imports",
    "explain it to me",
    "tell me what's in it",
    "describe it",
    "tell me which models it defines",
    "tell me if anything looks wrong",
    "give me a summary",
)
FILLERS: dict[str, tuple[str, ...]] = {
    "loc": LOCATIONS,
    "ctx": CONTEXTS,
    "folder": FOLDERS,
    "all": ALL,
    "sloc": SETTINGS_PLACES,
    "tail": READ_TAILS,
    "and": READ_AND,
}


@dataclass(frozen=True)
class Family:
    """One kind of request: its tool (None: a direct answer), wrapper style and frames."""

    tool: str | None
    style: str  # "imperative" or "question": which prefixes and suffixes fit
    weight: float  # relative share among the families of the same side (tool or direct)
    frames: tuple[str, ...]


def _families(side: str) -> dict[str, Family]:
    """The `side` ("tool" or "direct") request families of families.yaml, in file order."""
    data = yaml.safe_load(FAMILIES_FILE.read_text())[side]
    return {
        name: Family(f["tool"], f["style"], f["weight"], tuple(f["frames"]))
        for name, f in data.items()
    }


# The request families (families.yaml): what a user asks, by kind of request.
FAMILIES_FILE = Path(__file__).with_name("families.yaml")
TOOL_FAMILIES = _families("tool")
DIRECT_FAMILIES = _families("direct")

# --- content slots ---------------------------------------------------------------------------

# Things to search for, by category: (plural phrase, grep pattern). Patterns run with grep -rnE.
THINGS: tuple[tuple[str, str], ...] = (
    ("views", "class .*View"),
    ("view classes", "class .*View"),
    ("class-based views", "class .*View"),
    ("function-based views", "def .*\\(request"),
    ("api views", "APIView"),
    ("viewsets", "ViewSet"),
    ("serializers", "class .*Serializer"),
    ("serializer classes", "class .*Serializer"),
    ("models", "models.Model"),
    ("database models", "models.Model"),
    ("django models", "models.Model"),
    ("model fields", "models\\.[A-Za-z]*Field"),
    ("DecimalFields", "DecimalField"),
    ("decimal fields", "DecimalField"),
    ("foreign keys", "ForeignKey"),
    ("one-to-one fields", "OneToOneField"),
    ("CharFields", "CharField"),
    ("date fields", "DateTimeField"),
    ("boolean fields", "BooleanField"),
    ("url patterns", "path\\("),
    ("urlpatterns", "urlpatterns"),
    ("routes", "path\\("),
    ("api endpoints", "path\\(|@action"),
    ("router registrations", "router.register"),
    ("celery tasks", "shared_task|@task|async def"),
    ("background tasks", "async def"),
    ("background jobs", "async def"),
    ("signals", "signal|receiver"),
    ("signal receivers", "@receiver"),
    ("admin registrations", "admin.site|@admin"),
    ("admin classes", "ModelAdmin"),
    ("middleware classes", "Middleware"),
    ("migrations", "migrations"),
    ("management commands", "BaseCommand"),
    ("permission classes", "permission_classes|IsAuthenticated"),
    ("querysets", "objects\\."),
    ("select_related calls", "select_related"),
    ("prefetch_related calls", "prefetch_related"),
    ("atomic transactions", "transaction.atomic"),
    ("custom exceptions", "class .*\\(Exception|class .*\\(ValueError"),
    ("raise statements", "raise "),
    ("logging calls", "log\\.|logging"),
    ("log statements", "log\\."),
    ("print statements", "print\\("),
    ("TODO comments", "TODO"),
    ("FIXME comments", "FIXME"),
    ("todos", "TODO"),
    ("tests", "def test_"),
    ("test functions", "def test_"),
    ("unit tests", "def test_"),
    ("pytest fixtures", "@pytest.fixture"),
    ("fixtures", "fixture"),
    ("decorators", "^\\s*@"),
    ("@action endpoints", "@action"),
    ("api_view functions", "@api_view"),
    ("async functions", "async def"),
    ("coroutines", "async def"),
    ("await calls", "await "),
    ("imports", "^import |^from "),
    ("environment variables", "os.environ"),
    ("hard-coded urls", "https?://"),
    ("external urls", "https?://"),
    ("settings constants", "^[A-Z_]+ ="),
    ("Meta classes", "class Meta"),
    ("choice enums", "TextChoices"),
    ("related names", "related_name"),
    ("on_delete rules", "on_delete"),
    ("get_object_or_404 calls", "get_object_or_404"),
    ("json responses", "JsonResponse|Response\\("),
    ("http client calls", "httpx"),
    ("session usage", "session"),
    ("authentication checks", "authenticate|IsAuthenticated"),
    ("password handling", "password"),
    ("email code", "email"),
    ("constants", "^[A-Z_]+ ="),
    ("__str__ methods", "def __str__"),
    ("properties", "@property"),
    ("class methods", "@classmethod"),
    ("save() calls", "\\.save\\("),
    ("validators", "def validate"),
    ("raw sql", "raw\\(|cursor"),
    ("cache calls", "cache"),
    ("redis usage", "redis"),
    ("sleep calls", "sleep"),
    ("gather calls", "gather"),
    ("status codes", "status"),
    ("dataclasses", "@dataclass"),
    ("abstract models", "abstract = True"),
)
MARKERS = ("TODO", "FIXME", "XXX", "HACK")
WORDS = (
    "select_for_update", "prefetch_related", "select_related", "logger", "print(", "httpx",
    "@action", "as_view", "objects.filter", "get_object_or_404", "raise_exception", "is_valid",
    "request.user", "status=201", "Decimal", "session", "permission_classes", "serializer_class",
    "related_name", "on_delete", "auto_now_add", "unique=True", "default=", "JsonResponse",
    "api_view", "router", "include(", "urlpatterns", "asyncio", "gather",
)  # fmt: skip
INVENTED_NOUNS = (
    "Invoice", "Coupon", "Payment", "Refund", "Shipment", "Cart", "Customer", "Address", "Discount",
    "Review", "Category", "Wishlist", "Subscription", "Notification", "Warehouse", "Supplier",
    "Report", "Export", "Webhook", "Audit", "Tag", "Vendor", "Receipt", "Tax", "Basket", "Ticket",
    "Message", "Token", "Store", "Rating", "Voucher", "Promotion", "Inventory", "Checkout", "Account",
)  # fmt: skip
INVENTED_SUFFIXES = (
    ("", "model"), ("ViewSet", "viewset"), ("View", "view"), ("Serializer", "serializer"),
    ("Service", "class"), ("Manager", "manager"), ("Form", "form"), ("Admin", "admin class"),
    ("Task", "task"), ("Middleware", "middleware"), ("Mixin", "mixin"), ("Permission", "permission"),
    ("Filter", "filter"), ("Error", "exception"), ("Client", "client"), ("Handler", "handler"),
)  # fmt: skip
INVENTED_VERBS = (
    "send", "create", "cancel", "refund", "export", "import", "sync", "validate", "calculate",
    "apply", "notify", "update", "delete", "build", "parse", "charge", "archive", "reserve",
    "compute", "generate", "fetch", "process", "render", "schedule", "reset", "get", "check",
)  # fmt: skip
INVENTED_OBJECTS = (
    "invoice", "coupon", "payment", "order", "user", "email", "receipt", "report", "stock", "cart",
    "discount", "shipment", "password", "token", "profile", "address", "total", "tax", "webhook",
    "orders", "users", "prices", "refund", "summary",
)  # fmt: skip
INVENTED_SETTINGS = (
    "EMAIL_BACKEND", "STATIC_ROOT", "STATIC_URL", "MEDIA_ROOT", "CACHES", "LOGGING",
    "SESSION_COOKIE_AGE", "CORS_ALLOWED_ORIGINS", "SITE_ID", "LANGUAGE_CODE", "DEFAULT_AUTO_FIELD",
    "CSRF_TRUSTED_ORIGINS", "STRIPE_API_KEY", "SENTRY_DSN", "REDIS_URL", "EMAIL_HOST",
    "SESSION_ENGINE", "CELERY_RESULT_BACKEND", "DEFAULT_FROM_EMAIL", "LOGIN_URL", "USE_I18N",
    "SECURE_SSL_REDIRECT", "CSRF_COOKIE_SECURE", "DEFAULT_THROTTLE_RATES", "DEFAULT_RENDERER_CLASSES",
    "WSGI_APPLICATION", "TEMPLATES", "AUTH_PASSWORD_VALIDATORS",
)  # fmt: skip
NESTED_SETTINGS = ("PAGE_SIZE", "DEFAULT_PERMISSION_CLASSES", "DEFAULT_PAGINATION_CLASS")
FEATURES = (
    ("login", "login"), ("logout", "logout"), ("checkout", "checkout|place_order"),
    ("the user list", "user_list"), ("user detail", "user_detail"), ("place_order", "place_order"),
    ("cancel_order", "cancel"), ("order cancellation", "cancel"), ("stock handling", "stock"),
    ("payments", "payment"), ("signup", "signup|register"), ("password reset", "password"),
    ("the cart", "cart"), ("refunds", "refund"), ("shipping", "shipping"),
    ("the order viewset", "order"), ("email validation", "email"), ("profiles", "profile"),
    ("out of stock orders", "out_of_stock"), ("bad passwords", "bad_password"),
    ("the checkout endpoint", "checkout|place_order"), ("the logout view", "logout"),
    ("the user detail endpoint", "user_detail"), ("the cart endpoint", "cart"),
    ("the signup endpoint", "signup"), ("the order api", "order"),
)  # fmt: skip
# Things the code does, asked about by behaviour: (verb phrase, grep pattern).
ACTS: tuple[tuple[str, str], ...] = (
    ("check the stock", "stock"), ("send receipts", "receipt"), ("cancel orders", "cancel"),
    ("compute the order total", "def total|subtotal"), ("validate emails", "validate_email"),
    ("log users in", "login|authenticate"), ("notify the shipping service", "shipping|SHIPPING"),
    ("register the router", "router.register"), ("configure the database", "DATABASES"),
    ("hash passwords", "password"), ("paginate results", "PAGINATION|PAGE_SIZE"),
    ("handle out of stock errors", "OutOfStock"), ("expire stale carts", "expire_stale_carts"),
    ("talk to the payment provider", "payment|stripe"), ("create orders", "place_order|objects.create"),
    ("read the settings", "settings"), ("set the time zone", "TIME_ZONE"),
    ("call external apis", "https?://|httpx"), ("write log messages", "log\\.|logging"),
    ("check permissions", "permission"), ("serialize users", "UserSerializer"),
    ("lock rows", "select_for_update"), ("retry failed jobs", "retry"),
    ("build the urls", "path\\(|urlpatterns"), ("send emails", "email|mail"),
)  # fmt: skip
FIELD_ATTRS = (
    "related_name",
    "on_delete",
    "max_length",
    "default",
    "unique",
    "max_digits",
    "blank",
)


def _kind(name: str, file: str) -> str:
    """What a user calls a workspace class or function ("the OrderViewSet viewset")."""
    for suffix, kind in (("ViewSet", "viewset"), ("View", "view"), ("Serializer", "serializer")):
        if name.endswith(suffix):
            return kind
    if name[0].isupper():
        return "model" if file.endswith("models.py") else "class"
    return "view" if file.endswith("views.py") else "function"


@functools.cache
def symbols(facts: Facts) -> tuple[tuple[str, str, str], ...]:
    """(name, kind, grep pattern of its definition): the workspace's classes and functions
    plus invented ones (searching for them finds nothing, which is an answer too)."""
    real = [(n, _kind(n, f), f"class {n}") for n, f in facts.classes if n not in ("Meta", "Status")]
    real += [(n, _kind(n, f), f"def {n}") for n, f in facts.functions]
    invented = [(n + s, k, f"class {n}{s}") for n in INVENTED_NOUNS for s, k in INVENTED_SUFFIXES]
    invented += [
        (f"{v}_{o}", "function", f"def {v}_{o}") for v in INVENTED_VERBS for o in INVENTED_OBJECTS
    ]
    return tuple(real + invented)


@functools.cache
def settings_names(facts: Facts) -> tuple[str, ...]:
    return tuple(sorted({*facts.settings, *NESTED_SETTINGS, *INVENTED_SETTINGS}))


# The contexts ("in django") a topic group is asked in.
GROUP_CONTEXTS = {
    "general": ("programming", "computer science", "general", "python", "backend development"),
    "django": ("django", "drf", "django rest framework", "a web app", "backend development"),
    "web": ("web development", "a web app", "an api", "backend development"),
    "data": ("sql", "a relational database", "backend development", "django"),
    "tooling": ("python", "git", "programming", "general"),
    "python": ("python", "programming"),
    "api": ("django", "python", "drf", "django rest framework", "a web app"),
}


@functools.cache
def concept_groups() -> tuple[tuple[str, str, str], ...]:
    """(term, the answer's sentence, group) of every concept; the answer is a sentence."""
    groups = {"general": GENERAL, "django": DJANGO, "web": WEB, "data": DATA, "tooling": TOOLING,
              "python": PYCODE, "api": API}  # fmt: skip
    out = [(t, f"{t[0].upper() + t[1:]} is {d}.", g) for g, ts in groups.items() for t, d in ts]
    out += [(t, a, "python") for t, a in pydoc_topics()]
    return tuple(out)


def concept_topics() -> tuple[tuple[str, str], ...]:
    """(term, the answer's sentence) of every concept."""
    return tuple((t, a) for t, a, _ in concept_groups())


def slot_values(facts: Facts) -> dict[str, list[str]]:
    """Every value each content slot can take (for the wording-independence test)."""
    syms = symbols(facts)
    apps = [a for a in facts.apps]
    fields = [(m, f) for m, f, _, _ in facts.fields]
    return {
        "thing": [t for t, _ in THINGS],
        "sym": [s for s, _, _ in syms],
        "kind": sorted({k for _, k, _ in syms}),
        "setting": list(settings_names(facts)),
        "model": sorted({m for m, _ in fields}),
        "field": sorted({f for _, f in fields}),
        "attr": list(FIELD_ATTRS),
        "feature": [f for f, _ in FEATURES],
        "p": list(facts.files),
        "dir": apps,
        "app": apps,
        "word": [*MARKERS, *WORDS, *facts.dotted, *settings_names(facts), *(s for s, _, _ in syms)],
        "t": [t for t, _ in concept_topics()] + [t for pair in PAIRS for t, _ in pair],
        "act": [a for a, _ in ACTS],
        "a": [t for t, _ in concept_topics()] + [t for pair in PAIRS for t, _ in pair],
        "b": [t for t, _ in concept_topics()] + [t for pair in PAIRS for t, _ in pair],
        "task": [t for t, _ in HOWTO],
        "why": [t for t, _ in WHY],
        "when": [t for t, _ in WHEN],
    }


def _frame_words() -> frozenset[str]:
    texts = [f for fam in (*TOOL_FAMILIES.values(), *DIRECT_FAMILIES.values()) for f in fam.frames]
    texts += [
        t for group in (*FILLERS.values(), *PREFIXES.values(), *SUFFIXES.values()) for t in group
    ]
    texts += DIRECT_PREFIXES
    return frozenset(w for t in texts for w in re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", t)))


# Words of the frames and fillers: the only words a typo may change.
FRAME_WORDS = _frame_words()


# --- drawing one query ---------------------------------------------------------------------


def _g(pattern: str, where: str = ".", flags: str = "-rnE") -> dict[str, str]:
    """A grep command; `a|b` alternatives become `-e a -e b` (the sandbox refuses any `|`)."""
    parts = pattern.split("|")
    if len(parts) == 1:
        return {"command": f'grep {flags} "{pattern}" {where}'}
    return {"command": f"grep {flags} " + " ".join(f'-e "{p}"' for p in parts) + f" {where}"}


def _fill(rng: random.Random, frame: str, values: dict[str, str]) -> str:
    """`frame` with its content slots from `values` and its filler slots drawn at random."""
    out = {}
    for name in re.findall(r"\{(\w+)\}", frame):
        if name in values:
            out[name] = values[name]
        else:
            out[name] = rng.choice(FILLERS[name])
    return frame.format(**out)


def _where(rng: random.Random, facts: Facts, frame: str) -> tuple[dict[str, str], str]:
    """A location filler for `{loc}` (the whole project or one app) and the grep directory."""
    if "{loc}" not in frame or rng.random() < 0.7:
        return {}, "."
    app = rng.choice([a for a in facts.apps if a != "tests"])
    return {"loc": rng.choice(APP_LOCATIONS).format(app=app)}, app


def draw_tool(rng: random.Random, facts: Facts, family: str) -> tuple[str, str, dict[str, Any]]:
    """(core query, tool, arguments) of one query of a tool `family`."""
    fam = TOOL_FAMILIES[family]
    frame = rng.choice(fam.frames)
    v: dict[str, str] = {}
    loc, where = _where(rng, facts, frame)
    v.update(loc)
    sym, kind, sym_pattern = rng.choice(symbols(facts))
    v.update(sym=sym, kind=kind)
    setting = rng.choice(settings_names(facts))
    v["setting"] = setting
    files = list(facts.files)
    if family in ("things_find", "things_ask", "count"):
        thing, pattern = rng.choice(THINGS)
        v["thing"] = thing
        args = _g(pattern, where, "-rcE" if family == "count" else "-rnE")
    elif family == "symbol_find" or family == "symbol_where":
        args = _g(sym_pattern)
    elif family == "symbol_use":
        args = _g(sym)
    elif family == "setting":
        args = _g(setting, facts.settings_file)
    elif family == "behaviour":
        act, pattern = rng.choice(ACTS)
        v["act"] = act
        args = _g(pattern)
    elif family == "attr":
        model, field, _, path = rng.choice(facts.fields)
        v.update(model=model, field=field, attr=rng.choice(FIELD_ATTRS))
        args = _g(f"{field} = ", path)
    elif family == "tests":
        feature, key = rng.choice(FEATURES)
        v["feature"] = feature
        args = _g("|".join(f"def test_.*{k}" for k in key.split("|")), "tests")
    elif family == "wc":
        v["p"] = rng.choice([f for f in files if f.endswith(".py")])
        args = {"command": f"wc -l {v['p']}"}
    elif family == "lines_dir":
        v["dir"] = rng.choice([a for a in facts.apps if a != "tests"])
        args = {"command": f'grep -rc "" {v["dir"]}'}
    elif family in ("ls", "ls_ask"):
        v["dir"] = rng.choice(facts.apps)
        args = {"command": rng.choice([f"ls {v['dir']}", f'find {v["dir"]} -name "*.py"'])}
    elif family in ("top", "top_ask"):
        args = {"command": "ls"}
    elif family == "grep":
        v["dir"] = rng.choice([a for a in facts.apps if a != "tests"])
        word = rng.choice([*MARKERS, *MARKERS, *WORDS, *facts.dotted, setting, sym])
        v["word"] = word
        where = v["dir"] if "{dir}" in frame else where
        args = {"command": f'grep -rnF "{word}" {where}'}
    elif family == "project":
        pattern = PROJECT_PATTERNS[frame]
        args = {"command": pattern} if pattern.startswith("grep ") else _g(pattern)
    elif family in ("read_cmd", "read_ask", "read_bare", "read_and"):
        path = rng.choice(files)
        if "{setting}" in frame:
            path = facts.settings_file
            v["setting"] = rng.choice(facts.settings)
        elif "{sym}" in frame:
            name, file = rng.choice([*facts.classes, *facts.functions])
            v["sym"] = name
            path = file if rng.random() < 0.7 else path
        v["p"] = path
        args = {"path": path}
    else:
        raise KeyError(family)
    return _fill(rng, frame, v), fam.tool or "", args


# grep patterns (or whole grep commands) of the fixed "project" questions
PROJECT_PATTERNS = {
    "which apps are installed in this project": 'grep -n -A8 "INSTALLED_APPS" shop/settings.py',
    "what middleware do we use": 'grep -n -A6 "MIDDLEWARE" shop/settings.py',
    "what database does this project use": "ENGINE|DATABASES",
    "which database engine are we on": "ENGINE",
    "what's our time zone setting": "TIME_ZONE",
    "what user model do we use": "AUTH_USER_MODEL",
    "where is the celery broker configured": "CELERY",
    "what url routes do we expose": "path\\(",
    "which endpoints does our api have": "path\\(|@action",
    "what does our router register": "router.register",
    "what permission classes do we use": "permission_classes|PERMISSION",
    "what's our default pagination": "PAGINATION|PAGE_SIZE",
    "what external apis do we call": "https?://",
    "how do we authenticate users here": "authenticate|IsAuthenticated",
    "how are orders cancelled in our code": "cancel",
    "where do we send emails": "email|mail",
    "what models do we have": "models.Model",
    "which serializers does the orders app define": "class .*Serializer",
    "what urls does the project have": "path\\(",
    "what's the root urlconf here": "ROOT_URLCONF",
    "which rest framework settings do we use": "REST_FRAMEWORK|DEFAULT_",
    "how do our views check permissions": "permission",
    "what background jobs does this project run": "async def|def expire",
    "where do we talk to the shipping service": "SHIPPING|shipping",
    "what status values can our orders have": "TextChoices|PENDING|PAID",
    "what fields does our user model have": "models\\.[A-Za-z]*Field",
    "how do we compute an order's total": "def total|subtotal",
    "what happens when an order is placed in our code": "def place_order",
    "which views need a logged in user": "IsAuthenticated|permission_classes",
}


def draw_direct(
    rng: random.Random, family: str, unknown_term: str = "", generic: bool = False
) -> tuple[str, str]:
    """(core query, answer body without opener) of one conceptual question of `family`;
    `generic`: the family's one answer (`GENERIC_ANSWERS`) instead of the topic's own."""
    fam = DIRECT_FAMILIES[family]
    frame = rng.choice(fam.frames)
    v: dict[str, str] = {}
    if family in ("concept", "concept_ctx"):
        t, answer, group = rng.choice(concept_groups())
        v.update(t=t, ctx=rng.choice(GROUP_CONTEXTS[group]))
    elif family == "compare":
        if rng.random() < 0.5:
            (a, da), (b, db) = rng.choice(PAIRS)
        else:
            group = rng.choice((GENERAL, DJANGO, WEB, DATA, TOOLING, PYCODE, API))
            (a, da), (b, db) = rng.sample(group, 2)
        if rng.random() < 0.5:
            (a, da), (b, db) = (b, db), (a, da)
        v.update(a=a, b=b)
        answer = f"{a[0].upper() + a[1:]} is {da}, while {b} is {db}."
    elif family == "howto":
        v["task"], answer = rng.choice(HOWTO)
    elif family == "why":
        v["why"], answer = rng.choice(WHY)
    elif family == "when":
        v["when"], answer = rng.choice(WHEN)
    elif family == "unknown":
        v.update(t=unknown_term, ctx=rng.choice(CONTEXTS))
        answer = UNKNOWN_TERM_ANSWER
    else:
        raise KeyError(family)
    if generic and family != "unknown":
        answer = GENERIC_ANSWERS[family]
    return _fill(rng, frame, v), answer


# Made-up terms for some conceptual questions ("What is a korilo?"): the model must answer
# "What is <term>?" directly for terms it never saw, as unseen topics are.
_SYLLABLES = (
    "ba", "ko", "ri", "tu", "zen", "lo", "mi", "qua", "fer", "dex", "vo", "ly", "gor", "pim",
    "sa", "nu", "tri", "xel", "ond", "ar", "cle", "mo", "sur", "ep",
)  # fmt: skip
_NONCE_FORMS = (
    "a {w}", "a {w}", "an {w}", "{w}", "{w}s", "the {w} pattern", "a Python {w}", "{w} in Python",
    "a {w} function", "an {w} API", "a {w} field", "the {w} middleware", "{w} in django",
    "the {w} setting", "{w} in a django model", "{w} in drf",
)  # fmt: skip


def _nonce_word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))


def nonce_topic(rng: random.Random) -> str:
    word = _nonce_word(rng)
    roll = rng.random()
    if roll < 0.2:  # acronym-like, as ORM or JWT
        word = word[: rng.randint(2, 4)].upper()
    elif roll < 0.55:  # identifier-like, as auto_now, SECRET_KEY or select_related
        second = _nonce_word(rng)
        word = rng.choice((f"{word}_{second}", f"{word}_{second}".upper(),
                           word.capitalize() + second.capitalize(), f"{word}()"))  # fmt: skip
    text = rng.choice(_NONCE_FORMS).format(w=word)
    if text.startswith(("a ", "an ")):
        noun = text.split(" ", 1)[1]
        text = ("an " if noun[0].lower() in "aeiou" else "a ") + noun
    return text


def pick_family(rng: random.Random, families: dict[str, Family]) -> str:
    names = list(families)
    return rng.choices(names, weights=[families[n].weight for n in names])[0]


# --- surface variation ---------------------------------------------------------------------


def _typo(rng: random.Random, text: str, frame_words: frozenset[str]) -> str:
    """One misspelt word (swapped, dropped or doubled letter) of the frame, not of a slot."""
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if len(w) >= 4 and w in frame_words]
    if not spots:
        return text
    i = rng.choice(spots)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    roll = rng.random()
    if roll < 0.4:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    elif roll < 0.7:
        w = w[:j] + w[j + 1 :]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def vary(
    rng: random.Random, core: str, style: str, direct: bool, frame_words: frozenset[str]
) -> str:
    """Politeness, chat noise, casing, punctuation and the odd typo around a core query."""
    prefixes = PREFIXES[style] + (DIRECT_PREFIXES if direct else ())
    text = rng.choice(prefixes) + core + rng.choice(SUFFIXES[style])
    if rng.random() < 0.06:
        text = _typo(rng, text, frame_words)
    roll = rng.random()
    if style == "question":
        text += "?" if roll < 0.55 else ("" if roll < 0.95 else " ?")
    else:
        text += "" if roll < 0.7 else ("." if roll < 0.9 else "!")
    if rng.random() < 0.4:
        text = text[0].upper() + text[1:]
    return text
