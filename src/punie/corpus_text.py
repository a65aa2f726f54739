"""Wording for the synthetic corpus: query templates, fillers, topics and verbose phrasing.

Conceptual topics deliberately leave out every topic of the held-out and seed query sets
(decorators, the GIL, closures, dependency injection, lists vs tuples, ...): accuracy on those
sets then measures how the model generalises the *framing* of a question, not recall.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from punie.corpus import Facts

PREFIXES = ("",) * 8 + (
    "Hey, ",
    "Please ",
    "Can you ",
    "Could you ",
    "Quick question: ",
    "Hi Punie, ",
    "I need your help: ",
    "Punie, ",
    "OK, ",
    "So, ",
    "hey punie, ",
    "Would you ",
)
QUESTION_PREFIXES = ("",) * 8 + (
    "Hey, ",
    "Quick question: ",
    "Hi Punie, ",
    "So, ",
    "I was wondering: ",
    "Punie, ",
    "OK, ",
    "hey, ",
    "Question: ",
)
SUFFIXES = ("", "", "", ".", " please", ", thanks", " for me", "!", " thanks")

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
RESTATES = (
    "In other words, that is the core idea behind {t}.",
    "So, in short, that is what {t} means.",
    "To put it simply, that is {t} in a nutshell.",
    "That is the main thing to remember about {t}.",
)
CLOSERS = (
    "I hope this helps! Let me know if you have any other questions.",
    "Let me know if you would like more details!",
    "Feel free to ask if anything is unclear.",
    "I hope that answers your question!",
    "Happy to help with anything else!",
)

# (topic, definition). None of the held-out or seed topics appear here.
TOPICS: tuple[tuple[str, str], ...] = (
    ("a lambda function", "a small anonymous function written as a single expression"),
    ("an iterator", "an object that hands out the items of a sequence one at a time"),
    ("an exception", "an error signal that stops normal flow until a handler catches it"),
    ("inheritance", "a way for a class to reuse and extend the behaviour of a parent class"),
    ("polymorphism", "the ability of different types to be used through one interface"),
    ("encapsulation", "keeping data and the code that changes it behind a clear interface"),
    ("a set", "an unordered collection of unique items"),
    ("big-O notation", "a way to describe how the cost of an algorithm grows with its input"),
    ("binary search", "a search that halves a sorted range at every step"),
    ("a linked list", "a chain of nodes where each node points to the next one"),
    ("a stack", "a last-in, first-out collection"),
    ("a queue", "a first-in, first-out collection"),
    ("memoization", "caching the results of a function so repeated calls are fast"),
    ("caching", "keeping the results of expensive work at hand so they can be reused"),
    ("an HTTP status code", "a three-digit number a server returns to say how a request went"),
    ("JSON", "a light text format for objects, arrays, strings and numbers"),
    ("a SQL join", "a query that combines rows of two tables on a related column"),
    ("a database index", "a lookup structure that makes finding rows by a column faster"),
    ("a database transaction", "a group of changes that succeed or fail together"),
    ("continuous integration", "building and testing every change automatically"),
    ("a git branch", "a movable pointer to a line of commits for parallel work"),
    ("code review", "reading a colleague's change before it is merged"),
    ("refactoring", "changing the structure of code without changing what it does"),
    ("the singleton pattern", "a design that allows only one instance of a class"),
    ("the factory pattern", "a design where one function decides which object to create"),
    ("the observer pattern", "a design where objects subscribe to be told about changes"),
    ("a microservice", "a small, independently deployed service that owns one job"),
    ("a Docker container", "a packaged process with its own file system and dependencies"),
    ("an environment variable", "a named value the operating system passes to a process"),
    ("logging", "recording what a program does so problems can be diagnosed later"),
    ("profiling", "measuring where a program spends its time or memory"),
    ("a coroutine", "a function that can pause at await points and resume later"),
    ("an event loop", "the scheduler that runs coroutines and callbacks in turn"),
    ("mocking", "replacing a real object with a stand-in during a test"),
    ("a test fixture", "setup code that prepares the state a test needs"),
    ("test-driven development", "writing a failing test first, then the code that passes it"),
    ("a linter", "a tool that checks code for errors and style problems without running it"),
    ("PEP 8", "the style guide for Python code"),
    ("duck typing", "using an object by what it can do rather than by its type"),
    ("a dunder method", "a special method such as __init__ that Python calls for you"),
    ("a dataclass", "a class whose __init__ and repr are generated from its fields"),
    ("an enum", "a type with a fixed set of named values"),
    ("an f-string", "a string literal that embeds expressions in curly braces"),
    ("*args and **kwargs", "the syntax for taking any number of positional and keyword arguments"),
    ("a namespace", "a mapping from names to objects that keeps names from clashing"),
    ("a Python package", "a directory of modules that can be imported together"),
    ("pip", "the standard tool for installing Python packages"),
    ("semantic versioning", "a major.minor.patch scheme that signals compatibility"),
    ("pagination", "splitting a long list of results into pages"),
    ("authentication", "checking who a user is"),
    ("authorization", "checking what a user is allowed to do"),
    ("CSRF", "an attack that tricks a logged-in browser into sending a request"),
    ("CORS", "the browser rule that decides which origins may call an API"),
    ("SQL injection", "an attack that smuggles SQL into a query through user input"),
    ("password hashing", "storing a one-way digest of a password instead of the password"),
    ("a session cookie", "a token the browser sends back so the server knows the user"),
    ("a message queue", "a buffer that lets one service hand work to another"),
    ("WSGI", "the standard interface between Python web apps and web servers"),
    ("middleware", "code that runs around every request and response"),
    ("a Django signal", "a hook that lets code react when, for example, a model is saved"),
    ("a QuerySet", "a lazy Django query that runs only when it is evaluated"),
    ("a foreign key", "a column that refers to a row in another table"),
    ("database normalization", "organising tables so each fact is stored once"),
    ("a race condition", "a bug where the result depends on the timing of concurrent work"),
    ("a deadlock", "a state where tasks wait on each other forever"),
    ("a pure function", "a function whose result depends only on its arguments"),
    ("functional programming", "a style that builds programs from pure functions"),
    ("object-oriented programming", "a style that bundles data and behaviour into objects"),
    ("an abstract base class", "a class that defines methods its subclasses must implement"),
    ("a mixin", "a small class that adds one behaviour to other classes"),
    ("a webhook", "an HTTP call a service makes to your URL when an event happens"),
    ("GraphQL", "a query language that lets clients ask for exactly the fields they need"),
    ("a regular expression", "a pattern that describes a set of strings"),
    ("Unicode", "the standard that gives every character a number"),
    ("a shallow copy", "a copy of a container that still shares the objects inside it"),
    ("a deep copy", "a copy of a container and, recursively, of everything inside it"),
    ("a lock", "a primitive that lets one thread at a time into a section of code"),
    ("load balancing", "spreading requests across several servers"),
    ("a CDN", "a network of servers that serves static files close to the user"),
    ("a Python wheel", "a built package archive that pip installs without compiling"),
    ("monkey patching", "changing a module or class at runtime"),
    ("an API key", "a secret token that identifies the program calling an API"),
    ("a cron job", "a command that a scheduler runs at fixed times"),
    ("a slice", "a way to take part of a sequence with start, stop and step"),
    ("a property", "a method that is read like an attribute"),
    ("a static method", "a method that belongs to a class but needs no instance"),
    ("string interpolation", "building a string by inserting values into a template"),
    ("a stack trace", "the list of calls that were active when an error happened"),
    ("a breakpoint", "a place where a debugger pauses the program"),
    ("type checking", "verifying that values are used with the types the code expects"),
)

DIRECT_TEMPLATES = (
    "What is {t}?",
    "What's {t}?",
    "Explain {t}",
    "Can you explain {t}?",
    "Explain {t} to me",
    "How does {t} work?",
    "Why would I use {t}?",
    "When should I use {t}?",
    "What is {t} good for?",
    "What is the purpose of {t}?",
    "Describe {t}",
    "Tell me about {t}",
    "Give me a short overview of {t}",
    "In simple terms, what is {t}?",
    "I'm confused about {t}. What is it?",
    "What does {t} mean?",
    "Define {t}",
    "What are the benefits of {t}?",
    "Why is {t} useful?",
    "Explain what {t} is",
    "Help me understand {t}",
    "What does {t} do?",
    "Why do people use {t}?",
    "How would you describe {t}?",
    "Is {t} important?",
    "What problem does {t} solve?",
    "Could you explain {t} briefly?",
    "Teach me about {t}",
    "What should I know about {t}?",
    "Explain the idea of {t}",
)
DIFF_TEMPLATES = (
    "What is the difference between {a} and {b}?",
    "What's the difference between {a} and {b}?",
    "Explain the difference between {a} and {b}",
    "How does {a} differ from {b}?",
    "Compare {a} and {b}",
    "Should I use {a} or {b}?",
    "What sets {a} apart from {b}?",
    "When do I pick {a} over {b}?",
    "How are {a} and {b} different?",
)

_QUESTION_WORDS = re.compile(
    r"^(what|what's|why|how|when|which|where|who|should|is|are|can|do|does|i'm|in)\b", re.I
)


def is_question(core: str) -> bool:
    return bool(_QUESTION_WORDS.match(core))


def answer_body(rng: random.Random, topic: str, definition: str) -> str:
    restate = rng.choice(RESTATES).format(t=topic)
    return f"{topic[0].upper() + topic[1:]} is {definition}. {restate}"


# --- tool queries --------------------------------------------------------------------------

VIEW_Q = (
    "Find all Django views",
    "List all the views",
    "Where are the views defined?",
    "Show me every view class",
    "Find the class-based views in {d}",
    "Which views exist in {d}?",
    "Find the views in the {d} app",
    "Search for APIView subclasses",
    "List the API views in {d}",
    "Find all views in {d}",
    "Locate the view classes",
    "Grep for views",
)
FUNC_VIEW_Q = (
    "Find the function-based views",
    "List the function views in {d}",
    "Which functions take a request in {d}?",
    "Locate the plain function views",
)
MODEL_Q = (
    "List the models",
    "Which database models are defined?",
    "Show me the model classes in {d}",
    "Where are the models?",
    "Find every Django model in {d}",
    "Search for model classes",
)
SERIALIZER_Q = (
    "List the serializer classes",
    "Which serializers are there in {d}?",
    "Find all serializers",
    "Locate every serializer",
    "Search for DRF serializers",
)
ASYNC_Q = (
    "Find all async functions",
    "List the async functions in {d}",
    "Search for coroutines in the code",
    "Which functions are async?",
    "Find async code in {d}",
    "Show me every async def",
    "Locate the asynchronous functions in the codebase",
)
TEST_Q = (
    "Find all the tests",
    "List the test functions",
    "Which tests exist?",
    "Show me the test cases",
    "Search for test functions",
    "How many tests are there?",
)
TEST_FILES_Q = (
    "List the test files",
    "What test files are there?",
    "Find the test modules",
    "Which files contain tests?",
)
TODO_Q = (
    "Find TODO comments",
    "Search for TODOs",
    "Grep for {w}",
    "Are there any {w} notes?",
    "Look for {w} markers in the code",
)
CLASS_DEF_Q = (
    "Where is {s} defined?",
    "Find the {s} class",
    "Locate {s}",
    "Show me the {s} implementation",
    "Find the definition of {s}",
    "Which file defines {s}?",
    "Look up {s}",
    "Where can I find {s}?",
    "Find {s}",
    "Show me {s}",
    "Jump to {s}",
    "Search for the {s} class",
    "Where does {s} live?",
    "Show me the code of {s}",
)
FUNC_DEF_Q = (
    "Where is the {s} function?",
    "Find the {s} function",
    "Locate def {s}",
    "Show me the {s} function",
    "Where is {s} defined?",
    "Find where {s} is implemented",
    "Show me the implementation of {s}",
    "Which module has {s}?",
)
USAGE_Q = (
    "Where is {s} used?",
    "Find references to {s}",
    "Search the code for {s}",
    "Search the code for calls to {s}",
    "Find all uses of {s}",
    "Show me where {s} is used",
    "Who calls {s}?",
    "Find every call to {s}",
    "Which files use {s}?",
    "Grep for {s}",
    "Find usages of {s}",
)
IMPORT_Q = (
    "Which files import {s}?",
    "Find the imports of {s}",
    "Where is {s} imported?",
    "Who imports {s}?",
    "List the modules that import {s}",
)
URL_Q = (
    "Find the URL routes",
    "List the URL patterns",
    "Which URLs are defined?",
    "Search for the routes that use as_view",
    "Find the path() entries",
    "Show the URL conf routes",
)
LIST_Q = (
    "List every Python file in {d}",
    "What files are in {d}?",
    "Show the files of the {d} app",
    "List the {d} directory",
    "What's inside {d}?",
    "List the modules in {d}",
    "Find the Python files in {d}",
    "Which files does {d} have?",
)
TOP_Q = (
    "Show the project layout",
    "List the top-level files",
    "What is in the workspace?",
    "List the project directories",
    "Show me the repository structure",
)
COUNT_DIR_Q = (
    "Count the lines of code in {d}",
    "How big is the {d} app?",
    "How many lines are in each file of {d}?",
    "Count lines per file in {d}",
)
COUNT_FILE_Q = (
    "How many lines does {p} have?",
    "How long is {p}?",
    "Count the lines in {p}",
    "What is the line count of {p}?",
)
SETTING_Q = (
    "Find the {w} setting",
    "Search the settings for {w}",
    "Where is {w} configured?",
    "Grep the settings for {w}",
    "What is {w} set to in the settings?",
)
READ_Q = (
    "Show me the contents of {p}",
    "Open {p}",
    "Read {p}",
    "Show the file {p}",
    "Display {p}",
    "Print {p}",
    "Let me see {p}",
    "cat {p}",
    "What's in {p}?",
    "Can I see {p}?",
    "View {p}",
    "Give me the source of {p}",
    "Dump {p}",
    "Show {p}",
    "Read the file {p}",
    "Print the file {p}",
    "Open the {p} file",
    "What does {p} contain?",
    "Let me look at {p}",
    "Show me {p}",
    "Read me {p}",
    "Bring up {p}",
    "Open up {p}",
    "Print out {p}",
)
READ_TAILS = (
    "",
    "",
    "",
    "",
    " of the workspace",
    " in the workspace",
    " from the project",
    " in full",
)


def _g(pattern: str, where: str = ".") -> dict[str, str]:
    return {"command": f'grep -rn "{pattern}" {where}'}


def tool_query_templates(facts: Facts, rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    """One candidate (query, tool, args) per query family; the caller picks one."""
    rc = "run_command"
    apps = [a for a in facts.apps if a != "tests"]
    d = rng.choice([*apps, *apps, "."])
    where = d if d != "." else "."
    dname = d if d != "." else "the project"
    cls, _ = rng.choice(facts.classes)
    fn, _ = rng.choice(facts.functions)
    sym = rng.choice([cls, fn])
    path = rng.choice(facts.files)
    py = rng.choice([f for f in facts.files if f.endswith(".py")])
    used = rng.choice([sym, *facts.dotted])
    listed = rng.choice(facts.apps)
    counted = rng.choice(apps)
    todo = rng.choice(["TODO", "FIXME", "XXX", "HACK"])
    f = lambda qs, **kw: rng.choice(qs).format(**kw)  # noqa: E731
    out: list[tuple[str, str, dict[str, Any]]] = [
        (f(VIEW_Q, d=dname), rc, _g("class .*View", where)),
        (f(FUNC_VIEW_Q, d=dname), rc, _g("def .*(request", where)),
        (f(MODEL_Q, d=dname), rc, _g("models.Model", where)),
        (f(SERIALIZER_Q, d=dname), rc, _g("class .*Serializer", where)),
        (f(ASYNC_Q, d=dname), rc, _g("async def", where)),
        (f(TEST_Q), rc, _g("def test_", "tests")),
        (f(TEST_FILES_Q), rc, {"command": 'find tests -name "test_*.py"'}),
        (f(TODO_Q, w=todo), rc, _g(todo)),
        (f(CLASS_DEF_Q, s=cls), rc, _g(f"class {cls}")),
        (f(FUNC_DEF_Q, s=fn), rc, _g(f"def {fn}")),
        (f(USAGE_Q, s=used), rc, _g(used)),
        (f(IMPORT_Q, s=sym), rc, _g(f"import.*{sym}")),
        (f(URL_Q), rc, _g("as_view" if rng.random() < 0.5 else "path(", "shop")),
        (
            f(LIST_Q, d=listed),
            rc,
            {"command": rng.choice([f'find {listed} -name "*.py"', f"ls {listed}"])},
        ),
        (f(TOP_Q), rc, {"command": "ls"}),
        (f(COUNT_DIR_Q, d=counted), rc, {"command": f'grep -rc "" {counted}'}),
        (f(COUNT_FILE_Q, p=py), rc, {"command": f"wc -l {py}"}),
        (f(READ_Q, p=path) + rng.choice(READ_TAILS), "read_file", {"path": path}),
        (f(READ_Q, p=path) + rng.choice(READ_TAILS), "read_file", {"path": path}),
        (f(READ_Q, p=path), "read_file", {"path": path}),
        (f(READ_Q, p=py), "read_file", {"path": py}),
        (f(READ_Q, p=py) + rng.choice(READ_TAILS), "read_file", {"path": py}),
        (f(READ_Q, p=path), "read_file", {"path": path}),
        (f(READ_Q, p=py), "read_file", {"path": py}),
    ]
    if facts.settings:
        w = rng.choice(facts.settings)
        out.append((f(SETTING_Q, w=w), rc, _g(w, facts.settings_file)))
    return out
