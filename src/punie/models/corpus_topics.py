# ruff: noqa: E501  (data tables: one topic or frame list per line reads best)
"""Conceptual topics of the synthetic corpus and their answers, all in plain English.

Every answer is a real definition: our own short ones below, and first sentences of the Python
reference that ships with Python (`pydoc_data.topics`, see `pydoc_answer`). Topics of the seed
and template held-out sets (decorators, the GIL, closures, dependency injection, lists vs
tuples, ...) stay out, so those sets measure how the framing of a question generalises.
"""

from __future__ import annotations

import functools
import re

# (topic, definition): general programming, Python, systems and data.
GENERAL: tuple[tuple[str, str], ...] = (
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

# Django, Django REST framework and Celery: the project's own vocabulary, asked about in general.
DJANGO: tuple[tuple[str, str], ...] = (
    ("a Django model", "a Python class that maps to a database table, one attribute per column"),
    ("a Django view", "a function or class that takes a web request and returns a response"),
    (
        "a DRF viewset",
        "a class that bundles the list, create, retrieve, update and delete actions of one resource",
    ),
    ("a serializer", "a class that turns model instances into JSON-ready data and validates input"),
    ("a ModelSerializer", "a serializer that builds its fields from a Django model"),
    ("a DRF router", "an object that generates URL patterns for the viewsets registered with it"),
    (
        "the URL dispatcher",
        "the part of Django that matches a request path against the URL patterns",
    ),
    ("a URL pattern", "a rule that maps a URL path to the view that handles it"),
    (
        "a Django migration",
        "a file that records a change to the database schema so it can be applied or reverted",
    ),
    (
        "makemigrations",
        "the Django command that writes migration files from changes to your models",
    ),
    (
        "a ModelAdmin class",
        "a class that configures how one model is listed and edited in the admin site",
    ),
    (
        "a Celery task",
        "a function that a Celery worker runs in the background, outside the request",
    ),
    ("Celery", "a distributed task queue for running Python jobs in the background"),
    ("a Celery beat schedule", "a table of tasks that Celery starts at fixed times"),
    (
        "select_related",
        "a QuerySet method that follows foreign keys with a SQL join in the same query",
    ),
    (
        "prefetch_related",
        "a QuerySet method that loads related objects in a second query and joins them in Python",
    ),
    (
        "the N+1 query problem",
        "running one extra query for every row of a list instead of one query for all of them",
    ),
    (
        "a Django app",
        "a Python package that bundles the models, views and other code of one feature",
    ),
    (
        "the INSTALLED_APPS setting",
        "the Django setting that lists the apps whose models and commands Django loads",
    ),
    ("a settings module", "the Python module that holds a project's configuration"),
    ("ALLOWED_HOSTS", "the list of host names a Django site agrees to serve"),
    ("a context processor", "a function that adds variables to every template context"),
    ("a template tag", "a piece of Django template syntax that runs Python logic while rendering"),
    ("a Django form", "a class that renders HTML inputs and validates submitted data"),
    (
        "a model manager",
        "the interface through which a model's database queries are made, usually objects",
    ),
    ("a custom user model", "a project's own user class that replaces Django's default one"),
    (
        "a generic view",
        "a ready-made view class for common patterns such as lists and detail pages",
    ),
    ("an APIView", "the Django REST framework base class for class-based API views"),
    ("a DRF permission class", "a class that decides whether a request may use a view"),
    ("throttling", "limiting how many requests a client may make to an API in a period"),
    ("a management command", "a custom command that runs through manage.py"),
    ("the Django test client", "a fake browser for calling views from tests"),
    ("a ManyToManyField", "a field that links rows of two tables through a join table"),
    ("a OneToOneField", "a field that links each row to exactly one row of another table"),
    ("related_name", "the option that names the reverse relation from the other model"),
    ("a DecimalField", "a model field for fixed-precision decimal numbers such as prices"),
    ("a CharField", "a model field for short strings with a maximum length"),
    ("a TextField", "a model field for long text without a length limit"),
    ("a slug", "a short URL-friendly label made of letters, numbers, hyphens and underscores"),
    ("TextChoices", "a Django enum whose members are string choices for a field"),
    ("a CSRF token", "a secret value a form sends back to prove the request came from the site"),
    ("ASGI", "the asynchronous successor of WSGI for Python web apps"),
    ("gunicorn", "a WSGI HTTP server for running Python web apps in production"),
    ("uvicorn", "an ASGI server for running asynchronous Python web apps"),
    (
        "a request object",
        "the object a view receives with the method, headers, body and user of a request",
    ),
    (
        "the Django ORM cache",
        "the results a QuerySet keeps after it is evaluated, so it is not queried twice",
    ),
    ("Django REST framework", "a toolkit for building web APIs on top of Django"),
    ("a nested serializer", "a serializer used as a field of another to include related objects"),
    (
        "an F expression",
        "a reference to a field's value inside the database, used in updates and filters",
    ),
    ("a Q object", "an object that combines query conditions with and, or and not"),
    ("a database router", "a class that decides which database a model's queries go to"),
    (
        "the session framework",
        "the part of Django that stores data about a visitor between requests",
    ),
    ("a fixture file", "a file of data that Django loads into the database, often for tests"),
    ("the messages framework", "the Django feature that shows one-time notices to a user"),
)

# Web, HTTP, security and APIs.
WEB: tuple[tuple[str, str], ...] = (
    ("an HTTP method", "a verb such as GET or POST that says what a request wants to do"),
    ("a 404 error", "the status a server returns when the requested resource does not exist"),
    ("a 500 error", "the status code for an unexpected failure on the server"),
    ("an HTTP header", "a name and value sent with a request or response"),
    ("content negotiation", "choosing the response format from what the client says it accepts"),
    ("OpenAPI", "a standard format for describing HTTP APIs"),
    (
        "the same-origin policy",
        "the browser rule that stops a page from reading responses of other origins",
    ),
    ("XSS", "an attack that injects script into pages other users see"),
    ("an ETag", "a response header that names one version of a resource for caching"),
    ("a refresh token", "a long-lived token used to get new short-lived access tokens"),
    ("HTTP/2", "a newer version of HTTP that sends many requests over one connection"),
    ("a status code", "the number in a response that says how a request went"),
    ("a redirect", "a response that tells the browser to load another URL"),
    ("a query parameter", "a key and value passed in the query string of a URL"),
    ("form encoding", "the way a browser packs form fields into a request body"),
    ("single sign-on", "logging in once to use several related applications"),
    ("two-factor authentication", "logging in with a second proof besides the password"),
    ("an access token", "a short-lived credential that lets a client call an API"),
    ("an API gateway", "a server that sits in front of APIs and routes, checks and limits calls"),
    ("a static file", "a file such as CSS, JavaScript or an image that is served as it is"),
    ("a favicon", "the small icon a browser shows for a site"),
    ("HSTS", "a header that tells browsers to use only HTTPS for a site"),
    (
        "a content security policy",
        "a header that limits where a page may load scripts and other resources from",
    ),
)

# Databases and SQL.
DATA: tuple[tuple[str, str], ...] = (
    ("a composite index", "an index on several columns together"),
    ("a unique constraint", "a rule that no two rows may share a value"),
    (
        "a transaction isolation level",
        "the setting that decides what concurrent transactions see of each other",
    ),
    ("ACID", "the atomicity, consistency, isolation and durability guarantees of transactions"),
    ("a LEFT JOIN", "a join that keeps every row of the left table even without a match"),
    ("GROUP BY", "the SQL clause that groups rows so aggregates are computed per group"),
    ("a subquery", "a query nested inside another query"),
    ("a database cursor", "an object that runs queries and walks through their results"),
    ("denormalization", "storing some data twice on purpose so reads are faster"),
    ("a materialized view", "a saved query result that the database stores and refreshes"),
    (
        "an aggregate function",
        "a SQL function such as COUNT or SUM that reduces many rows to one value",
    ),
    ("a NULL value", "the SQL marker for a missing or unknown value"),
    (
        "a window function",
        "a SQL function that computes over a window of rows related to the current one",
    ),
    ("a query plan", "the steps the database chooses to run a query"),
    ("EXPLAIN", "the SQL command that shows the plan the database will use for a query"),
    ("a full table scan", "reading every row of a table because no index helps"),
    (
        "optimistic locking",
        "detecting conflicting updates with a version column instead of holding locks",
    ),
    ("a read replica", "a copy of a database that serves reads while the primary takes writes"),
    (
        "a surrogate key",
        "an artificial identifier, such as an auto-increment id, used as the primary key",
    ),
    ("a CTE", "a named subquery written with WITH at the start of a SQL statement"),
)

# Tools around the code: packaging, testing, linting, version control, containers.
TOOLING: tuple[tuple[str, str], ...] = (
    ("pytest", "a Python testing framework with plain assert statements and fixtures"),
    ("ruff", "a fast Python linter and formatter"),
    ("black", "an opinionated Python code formatter"),
    ("mypy", "a static type checker for Python"),
    ("a pre-commit hook", "a check that runs automatically before each git commit"),
    ("a requirements file", "a text file that lists the packages a project needs"),
    ("uv", "a fast Python package and project manager"),
    ("poetry", "a tool for managing the dependencies and packaging of a Python project"),
    ("Docker Compose", "a tool that runs several containers from one YAML file"),
    ("a Dockerfile", "a file of instructions for building a container image"),
    ("GitHub Actions", "GitHub's service for running CI workflows"),
    ("git bisect", "a git command that finds the commit that introduced a bug by binary search"),
    ("git stash", "a git command that shelves uncommitted changes for later"),
    ("cherry-picking", "applying one commit from another branch onto the current one"),
    ("a gitignore file", "a list of file patterns that git should not track"),
    ("coverage.py", "a tool that measures which lines of Python code the tests run"),
    ("cProfile", "the standard library profiler that counts calls and time per function"),
    ("pdb", "the standard library debugger for Python"),
    ("a container image", "a packaged file system and settings from which containers start"),
    ("a changelog", "a file that lists the notable changes of each release"),
    ("a code formatter", "a tool that rewrites code into one consistent style"),
    ("a type checker", "a tool that checks the types in code without running it"),
    ("a package index", "a server, such as PyPI, that hosts packages for installation"),
    ("PyPI", "the Python Package Index, where pip finds packages"),
    ("a shebang line", "the first line of a script that names the program to run it"),
)

# Python constructs, written the way people type them, asked about in general.
PYCODE: tuple[tuple[str, str], ...] = (
    ("__slots__", "a class attribute that fixes the instance attributes and saves memory"),
    ("__init__.py", "the file that marks a directory as a regular Python package"),
    (
        "__name__",
        "a module attribute that holds the module's name, or __main__ when it runs as a script",
    ),
    ("super()", "a built-in that calls a method of the parent class"),
    ("__repr__", "the method that returns an unambiguous text form of an object for debugging"),
    ("__str__", "the method that returns the readable text form of an object"),
    ("__eq__", "the method that defines what == means for a class"),
    ("__hash__", "the method that gives an object the hash used by sets and dict keys"),
    ("@classmethod", "a marker for a method that receives the class instead of an instance"),
    ("@staticmethod", "a marker for a method that receives neither the class nor an instance"),
    (
        "a mutable default argument",
        "a default such as an empty list that is created once and shared by every call",
    ),
    ("enumerate()", "a built-in that pairs each item of an iterable with its index"),
    ("zip()", "a built-in that walks several iterables in step and yields tuples"),
    ("a dict comprehension", "an expression that builds a dictionary from a loop in one line"),
    ("async with", "a with statement whose enter and exit steps are awaited"),
    (
        "asyncio.gather",
        "a function that runs several awaitables concurrently and collects their results",
    ),
    (
        "a Protocol class",
        "a class that describes the methods a type must have, checked by structure",
    ),
    ("functools.lru_cache", "a tool that caches a function's results by its arguments"),
    ("pathlib", "the standard library module for file system paths as objects"),
    (
        "the logging module",
        "the standard library module for recording events at levels such as info and error",
    ),
    (
        "a log level",
        "a label such as DEBUG, INFO, WARNING or ERROR that ranks how important a message is",
    ),
    ("sys.path", "the list of directories Python searches when it imports a module"),
    ("the walrus operator", "the := syntax that assigns a value inside an expression"),
    ("**kwargs", "the syntax for collecting extra keyword arguments into a dictionary"),
    ("isinstance()", "a built-in that checks whether an object is an instance of a class"),
    ("itertools", "the standard library module of fast building blocks for iteration"),
    ("collections.Counter", "a dictionary subclass that counts hashable items"),
    ("a frozenset", "an immutable, hashable version of a set"),
    ("bytes", "an immutable sequence of small integers, used for binary data"),
    ("None", "the single value Python uses to mean no value"),
    ("an assertion", "a check that a condition holds, which raises an error when it does not"),
    ("a traceback", "the report Python prints of the calls that led to an error"),
    ("try/except/finally", "the statement that catches errors and always runs a clean-up block"),
    ("a keyword-only argument", "a parameter that can only be passed by name"),
    ("a positional-only argument", "a parameter that can only be passed by position"),
    ("a docstring", "the string at the top of a function, class or module that documents it"),
    ("the with statement", "a statement that runs setup and guaranteed clean-up around a block"),
)

# Curated comparisons (first, second) of topics that are often confused.
PAIRS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("GET", "a request that reads data"), ("POST", "a request that sends data to be processed")),
    (
        ("git merge", "a command that joins two histories with a merge commit"),
        ("git rebase", "a command that replays commits on top of another branch"),
    ),
    (
        ("select_related", "a join in the same query, for foreign keys"),
        (
            "prefetch_related",
            "a second query joined in Python, for many-to-many and reverse relations",
        ),
    ),
    (
        ("a ForeignKey", "a many-to-one link to another table"),
        ("a OneToOneField", "a link that allows only one row on each side"),
    ),
    (
        ("authentication", "checking who a user is"),
        ("authorization", "checking what a user may do"),
    ),
    (
        ("SQL databases", "databases of related tables queried with SQL"),
        ("NoSQL databases", "databases that store documents, keys or graphs instead of tables"),
    ),
    (
        ("PostgreSQL", "a full client-server relational database"),
        ("SQLite", "a small relational database stored in a single file"),
    ),
    (
        ("a CharField", "a short string with a maximum length"),
        ("a TextField", "long text without a limit"),
    ),
    (
        ("null=True", "an option that lets the database store NULL"),
        ("blank=True", "an option that lets forms accept an empty value"),
    ),
    (
        ("a shallow copy", "a new container that shares the inner objects"),
        ("a deep copy", "a new container with copies of everything inside it"),
    ),
    (
        ("WSGI", "the synchronous interface between Python web apps and servers"),
        ("ASGI", "the asynchronous interface that also supports websockets"),
    ),
    (("gunicorn", "a WSGI server"), ("uvicorn", "an ASGI server")),
    (
        ("pip", "the standard package installer"),
        ("uv", "a much faster installer and project manager"),
    ),
    (
        ("a mutex", "a lock with a single owner"),
        ("a semaphore", "a counter that lets several holders in"),
    ),
    (
        ("concurrency", "overlapping progress on several tasks"),
        ("parallelism", "running several computations at the same moment"),
    ),
    (
        ("a stack", "a last-in, first-out collection"),
        ("a queue", "a first-in, first-out collection"),
    ),
    (("a library", "code your program calls"), ("a framework", "code that calls your program")),
    (
        ("an APIView", "a single class-based API view"),
        ("a viewset", "a class that groups the actions of a whole resource"),
    ),
    (
        ("__str__", "the readable text of an object"),
        ("__repr__", "the unambiguous text of an object for debugging"),
    ),
    (
        ("@staticmethod", "a method without the class or instance"),
        ("@classmethod", "a method that receives the class"),
    ),
    (
        ("TCP", "a reliable, ordered byte stream"),
        ("UDP", "independent packets without delivery guarantees"),
    ),
    (
        ("cookies", "small values the browser stores and sends back"),
        ("local storage", "a browser store that scripts read and that is never sent automatically"),
    ),
    (
        ("an inner join", "a join that keeps only matching rows"),
        ("an outer join", "a join that also keeps rows without a match"),
    ),
    (
        ("unittest", "the standard library's class-based test framework"),
        ("pytest", "a third-party framework with plain asserts and fixtures"),
    ),
    (
        ("a Celery task", "work a worker runs in the background"),
        ("a cron job", "a command the system scheduler runs at fixed times"),
    ),
    (
        ("a Django form", "a class that validates HTML form input"),
        ("a serializer", "a class that validates and renders API data"),
    ),
    (
        ("a function-based view", "a view written as a plain function"),
        ("a class-based view", "a view written as a class with one method per HTTP verb"),
    ),
    (("a list", "an ordered collection"), ("a set", "an unordered collection of unique items")),
    (
        ("a dictionary", "a mapping from keys to values"),
        ("a set", "a collection of unique keys without values"),
    ),
    (
        ("an iterator", "an object that hands out items one at a time"),
        ("an iterable", "anything that can give you an iterator"),
    ),
    (
        ("raise", "the statement that signals an error"),
        ("assert", "the statement that checks a condition while debugging"),
    ),
    (("a module", "a single Python file"), ("a package", "a directory of modules")),
    (
        ("a thread pool", "workers that share one process"),
        ("a process pool", "workers that each run in their own process"),
    ),
    (
        ("JSON", "a text format for data"),
        ("YAML", "a more readable superset of JSON often used for configuration"),
    ),
    (
        ("a unique constraint", "a rule enforced by the database"),
        ("validation", "a check done in application code"),
    ),
    (
        ("a primary key", "the column that identifies each row"),
        ("a foreign key", "a column that points to a row of another table"),
    ),
)

# How-to questions in general (not about this project): (task, answer).
HOWTO: tuple[tuple[str, str], ...] = (
    (
        "reverse a list in Python",
        "Call reverse() to reverse the list in place, or use the slice [::-1] for a reversed copy.",
    ),
    (
        "read a file line by line",
        "Open it in a with block and loop over the file object; each iteration gives one line.",
    ),
    (
        "merge two dictionaries",
        "Use the | operator, or {**a, **b}; keys of the second dictionary win.",
    ),
    (
        "sort a list of dicts by a key",
        "Pass a key function such as lambda d: d['name'] to sorted().",
    ),
    (
        "run a single test with pytest",
        "Give pytest the test's node id, or use -k with part of its name.",
    ),
    (
        "undo the last git commit",
        "Run git reset --soft HEAD~1 to keep the changes staged, or git revert to undo it with a new commit.",
    ),
    (
        "add an index to a Django model field",
        "Set db_index=True on the field or list it in Meta.indexes, then make and run a migration.",
    ),
    (
        "make a model field optional in Django",
        "Set null=True so the database accepts NULL and blank=True so forms accept an empty value.",
    ),
    (
        "write a custom Django management command",
        "Create a Command class with a handle() method in an app's management/commands package.",
    ),
    (
        "cache the result of an expensive function",
        "Wrap it with functools.lru_cache so repeated calls with the same arguments reuse the result.",
    ),
    (
        "parse a date string in Python",
        "Use datetime.strptime with a format string, or datetime.fromisoformat for ISO 8601 text.",
    ),
    (
        "roll back a Django migration",
        "Run migrate with the app name and the name of the migration to go back to.",
    ),
    (
        "profile a slow Python function",
        "Run it under cProfile and sort the report by cumulative time.",
    ),
    (
        "debug a Django view",
        "Put breakpoint() in the view and call it from a test or the dev server; the debugger stops there.",
    ),
    (
        "paginate a DRF list endpoint",
        "Set a pagination class and PAGE_SIZE in the REST_FRAMEWORK settings or on the view.",
    ),
    (
        "return JSON from a Django view",
        "Return a JsonResponse with a dictionary, or a DRF Response from an API view.",
    ),
    (
        "check if a key is in a dict",
        "Use the in operator, or dict.get to get None when the key is missing.",
    ),
    (
        "remove duplicates from a list",
        "Build a set from it, or use dict.fromkeys to keep the original order.",
    ),
    (
        "send an email from Django",
        "Call send_mail from django.core.mail with a subject, message, sender and recipients.",
    ),
    (
        "run work in the background in Django",
        "Hand it to a task queue such as Celery so the request can return at once.",
    ),
    (
        "hash a password",
        "Use a slow salted hash such as bcrypt or argon2, or Django's make_password; never store the password itself.",
    ),
    (
        "resolve a git merge conflict",
        "Edit the conflicted files, keep the right lines, remove the markers, then add and commit.",
    ),
    (
        "read an environment variable in Python",
        "Use os.environ['NAME'], or os.environ.get('NAME') when it may be missing.",
    ),
    (
        "time a piece of Python code",
        "Use time.perf_counter before and after it, or the timeit module for small snippets.",
    ),
    ("define a custom exception", "Subclass Exception and raise it like any other error."),
    (
        "serve static files in Django",
        "Set STATIC_URL and STATIC_ROOT, run collectstatic and let the web server serve the files.",
    ),
    ("log an exception with its traceback", "Call logger.exception inside the except block."),
    (
        "add a column to a SQL table",
        "Run ALTER TABLE with ADD COLUMN, or in Django add the field and create a migration.",
    ),
    ("split a string on commas", "Call split(',') on it; strip each part if there may be spaces."),
    (
        "pretty-print JSON in Python",
        "Call json.dumps with indent=2, or run python -m json.tool on a file.",
    ),
    (
        "iterate over a dict's keys and values",
        "Loop over d.items(), which yields key and value pairs.",
    ),
    ("count words in a string", "Split it and pass the words to collections.Counter."),
    (
        "make an HTTP request in Python",
        "Use a client library such as requests or httpx and call get or post.",
    ),
    (
        "retry a failing network call",
        "Wrap it in a loop with a limit and wait a little longer after each failure.",
    ),
    (
        "write a Django data migration",
        "Create an empty migration and add a RunPython operation with a function that changes the rows.",
    ),
    (
        "filter a QuerySet by date",
        "Use field lookups such as created_at__date or created_at__gte in filter().",
    ),
)

# "why ...?" questions in general: (clause, answer).
WHY: tuple[tuple[str, str], ...] = (
    (
        "should passwords be hashed",
        "A hash cannot be turned back into the password, so a leaked database does not leak the passwords.",
    ),
    (
        "do people pin dependency versions",
        "Pinned versions make every install identical, so an upstream release cannot break a build.",
    ),
    (
        "is global state considered bad",
        "Any code can change it, so behaviour depends on hidden history and tests interfere with each other.",
    ),
    (
        "should a web app use HTTPS",
        "It encrypts the traffic, so passwords and cookies cannot be read or changed on the way.",
    ),
    (
        "are mutable default arguments a trap in Python",
        "The default is created once, so every call that changes it changes it for the next call too.",
    ),
    (
        "should tests be independent of each other",
        "Then they can run in any order or alone, and one failure does not cause others.",
    ),
    (
        "is eval dangerous",
        "It runs any code it is given, so untrusted input can do anything the program can.",
    ),
    (
        "is premature optimization a problem",
        "It adds complexity before you know where the time goes, often in code that is not slow.",
    ),
    (
        "should views stay thin in Django",
        "Logic in models or services is easier to test and reuse than logic inside request handling.",
    ),
    (
        "do APIs paginate their results",
        "Long lists would be slow to build and send, so clients ask for one page at a time.",
    ),
    (
        "do databases need indexes",
        "Without an index the database reads every row to find the ones a query asks for.",
    ),
    (
        "is SQL injection still common",
        "Code still builds queries by pasting user input into strings instead of using parameters.",
    ),
    (
        "would anyone use a message queue",
        "It lets one service hand work to another without waiting, and smooths out bursts of load.",
    ),
    (
        "do people write docstrings",
        "They explain what code is for where the reader needs it, and tools can show them.",
    ),
    (
        "is floating point inexact",
        "Most decimal fractions have no exact binary form, so values are rounded to the nearest one.",
    ),
    (
        "do web apps use a CDN",
        "Static files then come from a server near the user, which is faster and spares the app server.",
    ),
    (
        "should secrets stay out of source code",
        "Anyone who can read the code could use them, and rotating them would need a code change.",
    ),
    (
        "does Python need __init__.py files",
        "They mark a directory as a regular package and can run package set-up code.",
    ),
    (
        "is composition often preferred to inheritance",
        "It couples classes less tightly, so parts can change or be swapped independently.",
    ),
    ("do teams review code", "A second reader catches bugs and shares knowledge of the code."),
)

# "when should i ...?" questions: (clause, answer).
WHEN: tuple[tuple[str, str], ...] = (
    (
        "use a class rather than a function",
        "When several functions share state or you need many objects of one kind.",
    ),
    (
        "raise an exception rather than return None",
        "When the caller cannot sensibly continue, so the problem cannot be ignored by accident.",
    ),
    (
        "use asyncio rather than threads",
        "When the work is mostly waiting on the network and you want many tasks in one thread.",
    ),
    (
        "add a database index",
        "When queries filter or sort on a column of a large table and are slow.",
    ),
    (
        "use a dataclass",
        "When a class mainly holds data and you want the init and repr written for you.",
    ),
    (
        "split a module in two",
        "When it mixes unrelated jobs or grows too long to read in one sitting.",
    ),
    (
        "use a task queue",
        "When work takes longer than a request should, or must be retried on failure.",
    ),
    (
        "denormalize a table",
        "When reads are far more frequent than writes and joins have become the bottleneck.",
    ),
    (
        "write an integration test",
        "When the risk is in how parts work together rather than in one function.",
    ),
    (
        "use a set instead of a list",
        "When you need fast membership tests and the order and duplicates do not matter.",
    ),
    (
        "reach for a regular expression",
        "When the text has a pattern that plain string methods cannot express simply.",
    ),
    ("use a generic view in Django", "When the view is a standard list, detail or form page."),
)

# Python reference topics whose first sentence answers a question: pydoc key -> the terms a
# user would type for it.
PYDOC_TERMS: dict[str, tuple[str, ...]] = {
    "assert": ("the assert statement", "assert statements"),
    "assignment": ("an assignment statement",),
    "augassign": ("augmented assignment", "the += operator"),
    "calls": ("a function call",),
    "comparisons": ("comparison operators in Python", "chained comparisons"),
    "compound": ("a compound statement",),
    "exceptions": ("exception handling",),
    "exprlists": ("an expression list",),
    "for": ("the for statement", "a for loop"),
    "formatstrings": ("format strings", "str.format"),
    "global": ("the global statement", "the global keyword"),
    "if": ("the if statement",),
    "in": ("the in operator", "membership tests"),
    "lambda": ("a lambda expression", "lambda"),
    "nonlocal": ("the nonlocal statement", "the nonlocal keyword"),
    "numbers": ("numeric literals",),
    "objects": ("a Python object",),
    "pass": ("the pass statement",),
    "power": ("the power operator", "the ** operator"),
    "slicings": ("slicing", "a slice of a sequence"),
    "subscriptions": ("subscription", "indexing with square brackets"),
    "try": ("the try statement",),
    "typesfunctions": ("a function object",),
    "typesmapping": ("a mapping type", "the dict type"),
    "typesmethods": ("a method object",),
    "typesseq": ("sequence types", "the range type"),
    "while": ("the while statement", "a while loop"),
    "atom-identifiers": ("an identifier",),
    "attribute-references": ("an attribute reference",),
    "bltin-null-object": ("the None object",),
    "bltin-type-objects": ("a type object",),
    "shifting": ("the shift operators", "bit shifting"),
    "specialnames": ("special method names", "magic methods"),
    "dynamic-features": ("name resolution at runtime",),
    "typesmodules": ("a module object",),
}

_REST = (
    (re.compile(r"\*\*?([^*]+)\*\*?"), r"\1"),  # *emphasis*, **strong**
    (re.compile(r'"([^"]+)"'), r"\1"),  # "literal"
    (re.compile(r"[“”]"), ""),
    (re.compile(r"\s*\((?:see|e\.g\.)[^)]*\)"), ""),  # (see section ...)
    (re.compile(r"\s+"), " "),
)


@functools.cache
def pydoc_answer(key: str) -> str:
    """The first sentence of the first prose paragraph of a Python reference topic, with the
    reST markup stripped (grammar productions and code blocks are skipped)."""
    from pydoc_data.topics import topics

    lines = topics[key].split("\n")[1:]
    paragraphs: list[str] = []
    current: list[str] = []
    for line in [*lines, ""]:
        prose = line.strip() and not line.startswith(" ") and "::=" not in line
        if prose and not set(line.strip()) <= set("*=-"):
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    text = paragraphs[0]
    for pattern, repl in _REST:
        text = pattern.sub(repl, text)
    sentence = re.split(r"(?<=[.:])\s+(?=[A-Z])", text.strip())[0]
    return sentence.rstrip(":").rstrip(".") + "."


def pydoc_topics() -> tuple[tuple[str, str], ...]:
    """(term, answer) for every term of PYDOC_TERMS: the answer is the reference's sentence."""
    return tuple((t, pydoc_answer(k)) for k, terms in PYDOC_TERMS.items() for t in terms)
