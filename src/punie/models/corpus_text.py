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
    from punie.models.corpus import Facts

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
    # Many short topics so "What is <term>?" is learnt from its framing, not from the term.
    ("a tree", "a hierarchy of nodes where each node has one parent"),
    ("a graph", "a set of nodes joined by edges"),
    ("a heap", "a tree that keeps its smallest or largest item at the top"),
    ("a trie", "a tree that stores strings by their shared prefixes"),
    ("a bloom filter", "a compact structure that says an item is maybe present or surely absent"),
    ("a bitmask", "an integer whose bits are used as a set of flags"),
    ("an array", "a block of items stored one after another in memory"),
    ("a matrix", "a grid of numbers arranged in rows and columns"),
    ("a vector", "an ordered list of numbers"),
    ("a byte", "eight bits, the smallest addressable unit of memory"),
    ("a pointer", "a value that holds the address of another value"),
    ("a compiler", "a program that translates source code into machine code"),
    ("an interpreter", "a program that runs source code directly, statement by statement"),
    ("bytecode", "an intermediate instruction format run by a virtual machine"),
    ("a virtual machine", "a program that emulates a computer to run code"),
    ("a kernel", "the core of an operating system that manages hardware"),
    ("a system call", "a request a program makes to the operating system"),
    ("a file descriptor", "a number the operating system uses to refer to an open file"),
    ("a socket", "an endpoint for sending and receiving data over a network"),
    ("TCP", "a protocol that delivers a reliable, ordered stream of bytes"),
    ("UDP", "a protocol that sends independent packets without delivery guarantees"),
    ("DNS", "the system that turns domain names into IP addresses"),
    ("an IP address", "a number that identifies a machine on a network"),
    ("HTTPS", "HTTP sent over an encrypted TLS connection"),
    ("TLS", "the protocol that encrypts traffic between two programs"),
    ("a proxy", "a server that forwards requests on behalf of a client"),
    ("a reverse proxy", "a server that receives requests and passes them to backends"),
    ("a firewall", "a filter that allows or blocks network traffic"),
    ("a port", "a number that picks which program on a machine receives traffic"),
    ("latency", "the time a single operation takes from start to finish"),
    ("throughput", "the amount of work done per unit of time"),
    ("bandwidth", "how much data a link can carry per second"),
    ("concurrency", "dealing with several tasks that make progress in overlapping time"),
    ("parallelism", "running several computations at literally the same time"),
    ("a mutex", "a lock that only one owner can hold at a time"),
    ("a semaphore", "a counter that limits how many tasks may enter a section"),
    ("an atomic operation", "an operation that completes without being interrupted"),
    ("a callback", "a function passed to other code to be called later"),
    ("a promise", "an object standing for a result that will arrive later"),
    ("a future", "a placeholder for the result of work that is still running"),
    ("a thread pool", "a fixed set of worker threads that run queued tasks"),
    ("a scheduler", "the component that decides which task runs next"),
    ("a daemon", "a background process that runs without a user"),
    ("a shell", "a program that reads commands and runs them"),
    ("a pipe", "a channel that feeds one program's output into another's input"),
    ("standard output", "the stream a program writes its normal results to"),
    ("an exit code", "the number a process returns to say whether it succeeded"),
    ("a signal handler", "a function the operating system calls when a signal arrives"),
    ("a symbolic link", "a file that points to another path"),
    ("file permissions", "rules that say who may read, write or run a file"),
    ("a checksum", "a short value computed from data to detect changes"),
    ("a hash function", "a function that maps data to a fixed-size value"),
    ("encryption", "turning data into a form only a key holder can read"),
    ("a public key", "the shareable half of a key pair used to encrypt or verify"),
    ("a digital signature", "proof that a message came from the holder of a private key"),
    ("OAuth", "a protocol that lets an app act for a user without their password"),
    ("a JWT", "a signed token that carries claims about a user"),
    ("rate limiting", "capping how many requests a client may make in a period"),
    ("a retry policy", "rules for when and how often to try a failed operation again"),
    ("exponential backoff", "waiting longer after each failed attempt"),
    ("a circuit breaker", "a guard that stops calling a failing service for a while"),
    ("idempotency", "the property that doing something twice has the same effect as once"),
    ("eventual consistency", "a guarantee that replicas agree once updates stop"),
    ("sharding", "splitting a database into parts stored on different machines"),
    ("replication", "keeping copies of data on several machines"),
    ("a primary key", "the column that uniquely identifies each row of a table"),
    ("a schema", "the description of the tables and columns of a database"),
    ("a stored procedure", "a routine saved inside the database and run there"),
    ("a view in SQL", "a saved query that can be read like a table"),
    ("NoSQL", "databases that store data in forms other than relational tables"),
    ("a key-value store", "a database that maps keys to values and little else"),
    ("Redis", "an in-memory key-value store often used as a cache"),
    ("PostgreSQL", "an open-source relational database"),
    ("SQLite", "a small relational database stored in a single file"),
    ("a connection pool", "a set of open database connections that requests share"),
    ("a template engine", "a library that fills placeholders in text with data"),
    ("a web framework", "a library that handles routing, requests and responses"),
    ("routing", "mapping a request URL to the code that handles it"),
    ("a query string", "the part of a URL after the question mark"),
    ("a cookie", "a small piece of data the browser stores for a site"),
    ("local storage", "a browser store of key-value strings for a site"),
    ("a single-page app", "a web app that updates one page instead of loading new ones"),
    ("server-side rendering", "building the HTML of a page on the server"),
    ("a websocket", "a connection that lets server and browser send messages both ways"),
    ("long polling", "a request the server holds open until it has news"),
    ("an SDK", "a set of libraries and tools for building on a platform"),
    ("a library", "reusable code that a program calls"),
    ("a framework", "reusable code that calls your code at the right moments"),
    ("a dependency", "a package your code needs in order to run"),
    ("a lock file", "a file that pins the exact versions of every dependency"),
    ("a build system", "a tool that turns source files into runnable artifacts"),
    ("a Makefile", "a file of rules that tell make how to build targets"),
    ("a monorepo", "one repository that holds many projects"),
    ("a pull request", "a proposal to merge a branch, with review and discussion"),
    ("a merge conflict", "two changes to the same lines that git cannot combine"),
    ("rebasing", "replaying commits on top of another branch"),
    ("a commit", "a saved snapshot of changes in version control"),
    ("a tag in git", "a fixed name for one commit, often a release"),
    ("version control", "tracking changes to files over time"),
    ("technical debt", "the future cost of shortcuts taken in code today"),
    ("code coverage", "the share of code that tests execute"),
    ("an integration test", "a test that checks several parts working together"),
    ("an end-to-end test", "a test that drives the whole system like a user would"),
    ("property-based testing", "testing that a rule holds for many generated inputs"),
    ("a flaky test", "a test that passes or fails without any code change"),
    ("a regression", "a bug that breaks something that used to work"),
    ("a benchmark", "a repeatable measurement of how fast code runs"),
    ("a memory leak", "memory a program keeps but no longer uses"),
    ("a buffer overflow", "writing past the end of a block of memory"),
    ("a null pointer", "a reference that points to nothing"),
    ("an off-by-one error", "a loop or index that goes one step too far or too short"),
    ("undefined behaviour", "code whose result the language does not specify"),
    ("a segfault", "a crash caused by touching memory the program may not use"),
    ("a core dump", "a file holding a crashed program's memory"),
    ("a debugger", "a tool for pausing a program and inspecting its state"),
    ("tracing", "recording the path of a request through a system"),
    ("a metric", "a number recorded over time to watch a system"),
    ("an alert", "a notification that a metric crossed a limit"),
    ("observability", "being able to tell what a system is doing from its outputs"),
    ("a feature flag", "a switch that turns a feature on or off without a deploy"),
    ("blue-green deployment", "switching traffic between two identical environments"),
    ("a rollback", "returning a system to its previous version"),
    ("infrastructure as code", "describing servers and networks in versioned files"),
    ("Kubernetes", "a system that schedules and runs containers across machines"),
    ("a virtual private server", "a rented virtual machine with its own operating system"),
    ("serverless computing", "running functions without managing the servers"),
    ("a cloud region", "a geographic area where a provider runs data centres"),
    ("an object store", "storage for files addressed by key, such as S3"),
    ("a data pipeline", "a chain of steps that moves and transforms data"),
    ("ETL", "extracting, transforming and loading data"),
    ("a CSV file", "a text file of values separated by commas"),
    ("YAML", "a readable text format for configuration"),
    ("TOML", "a simple configuration format with sections and keys"),
    ("XML", "a markup format that nests tagged elements"),
    ("Markdown", "a plain-text syntax for formatted documents"),
    ("base64", "a way to write binary data using text characters"),
    ("UTF-8", "the common encoding of Unicode characters as bytes"),
    ("endianness", "the order in which the bytes of a number are stored"),
    ("floating point", "the binary format computers use for real numbers"),
    ("integer overflow", "a result too large for the integer type holding it"),
    ("a bitwise operator", "an operator that works on the individual bits of integers"),
    ("short-circuit evaluation", "stopping a boolean test as soon as its result is known"),
    ("a ternary expression", "an if-else written as a single expression"),
    ("a walrus operator", "the := syntax that assigns inside an expression"),
    ("pattern matching", "the match statement that picks a branch by the shape of data"),
    ("unpacking", "assigning the items of a sequence to several names at once"),
    ("a default argument", "a parameter value used when the caller gives none"),
    ("a keyword argument", "an argument passed by name"),
    ("a docstring", "the string at the top of a function that documents it"),
    ("a module", "a single Python file that can be imported"),
    ("an import cycle", "two modules that import each other"),
    ("the standard library", "the modules that ship with Python"),
    ("a metaclass", "the class of a class, which controls how classes are built"),
    ("a descriptor", "an object that customises attribute access on a class"),
    ("slots", "a class option that fixes the attributes and saves memory"),
    ("a frozen object", "an object whose fields cannot change after creation"),
    ("a named tuple", "a tuple whose fields also have names"),
    ("a dictionary", "a mapping from keys to values"),
    ("a default dict", "a dictionary that creates missing values on first use"),
    ("a counter", "a dictionary that counts how often each item appears"),
    ("a deque", "a double-ended queue with fast appends at both ends"),
    ("a priority queue", "a queue that always hands out the most urgent item first"),
    ("sorting", "putting items in order"),
    ("quicksort", "a sort that partitions around a pivot and recurses"),
    ("merge sort", "a sort that splits a list, sorts the halves and merges them"),
    ("dynamic programming", "solving a problem by reusing answers to smaller problems"),
    ("a greedy algorithm", "an algorithm that takes the best local step each time"),
    ("breadth-first search", "exploring a graph level by level"),
    ("depth-first search", "exploring a graph as deep as possible before backing up"),
    ("an algorithm", "a step-by-step procedure for solving a problem"),
    ("a data structure", "a way to organise data so operations on it are efficient"),
    ("machine learning", "programs that learn patterns from data"),
    ("a neural network", "a model made of layers of weighted sums and nonlinearities"),
    ("overfitting", "a model that memorises training data and fails on new data"),
    ("a hyperparameter", "a setting chosen before training, such as the learning rate"),
    ("a tokenizer", "a tool that splits text into tokens"),
    ("an embedding", "a vector that represents an item such as a word"),
    ("a language model", "a model that predicts the next token of text"),
    ("quantization", "storing numbers with fewer bits to save memory"),
    ("a GPU", "a processor built for many parallel arithmetic operations"),
    ("a cache miss", "a lookup that does not find the data in the cache"),
    ("lazy evaluation", "computing a value only when it is needed"),
    ("immutability", "the property of data that cannot change after creation"),
    ("a side effect", "a change a function makes outside its return value"),
    ("a higher-order function", "a function that takes or returns other functions"),
    ("currying", "turning a function of several arguments into a chain of functions"),
    ("a monad", "a pattern for chaining computations that carry context"),
    ("an interface", "a set of methods a type promises to provide"),
    ("composition", "building objects out of other objects instead of inheriting"),
    ("coupling", "how much one part of code depends on another"),
    ("cohesion", "how closely the parts of a module belong together"),
    ("the adapter pattern", "a wrapper that makes one interface look like another"),
    ("the strategy pattern", "a design that swaps algorithms behind one interface"),
    ("the builder pattern", "a design that assembles a complex object step by step"),
    ("a design pattern", "a reusable solution to a common design problem"),
    ("clean code", "code that is easy to read, change and test"),
    ("an anti-pattern", "a common solution that causes more problems than it solves"),
    ("YAGNI", "the advice not to build things before you need them"),
    ("DRY", "the advice not to repeat the same knowledge in two places"),
    ("pair programming", "two developers working together at one computer"),
    ("agile", "a way of working in short iterations with frequent feedback"),
    ("a sprint", "a short fixed period in which a team finishes planned work"),
    ("a code smell", "a sign in code that something deeper may be wrong"),
    ("static typing", "checking types before the program runs"),
    ("dynamic typing", "checking types while the program runs"),
    ("a type alias", "a second name for an existing type"),
    ("a generic type", "a type that takes other types as parameters"),
    ("a union type", "a type that allows values of one of several types"),
    ("an optional value", "a value that may be missing"),
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


# Made-up terms for some conceptual questions ("What is a korilo?"): the model must answer
# "What is <term>?" directly for terms it never saw, as the held-out topics are unseen.
_SYLLABLES = (
    "ba",
    "ko",
    "ri",
    "tu",
    "zen",
    "lo",
    "mi",
    "qua",
    "fer",
    "dex",
    "vo",
    "ly",
    "gor",
    "pim",
    "sa",
    "nu",
    "tri",
    "xel",
    "ond",
    "ar",
    "cle",
    "mo",
    "sur",
    "ep",
)
_NONCE_FORMS = (
    "a {w}",
    "a {w}",
    "an {w}",
    "{w}",
    "{w}s",
    "the {w} pattern",
    "a Python {w}",
    "{w} in Python",
    "a {w} function",
    "an {w} API",
)
NONCE_DEFINITION = (
    "a general programming idea rather than something to look up in your code; "
    "I would need a little more context to explain it precisely"
)


def nonce_topic(rng: random.Random) -> str:
    word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    if rng.random() < 0.2:  # acronym-like, as ORM or JWT
        word = word[: rng.randint(2, 4)].upper()
    text = rng.choice(_NONCE_FORMS).format(w=word)
    if text.startswith(("a ", "an ")):
        noun = text.split(" ", 1)[1]
        text = ("an " if noun[0].lower() in "aeiou" else "a ") + noun
    return text


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
