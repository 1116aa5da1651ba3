"""Hand-made word and name pools for the demo workspace (no data is downloaded).

The workspace belongs to "Quillstack", a made-up team-collaboration SaaS (boards, docs,
automations) sold to companies and to freelancers. Everything here is small on purpose: the
generator combines these pools with a seeded RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

SITE = "https://www.quillstack.example"
PRODUCT = "Quillstack"


@dataclass(frozen=True)
class Country:
    """Where a person or company is: time zones, locale, names, phone and mail habits."""

    code: str
    weight: int
    """Relative share of visitors."""
    timezones: tuple[tuple[str, int], ...]
    """IANA zones with their relative weights."""
    locale: str
    names: str
    """Key into FIRST_NAMES / LAST_NAMES."""
    phone_prefixes: tuple[str, ...]
    """E.164 prefixes of valid (mobile) numbers; `phone_digits` random digits follow."""
    phone_digits: int
    freemail: tuple[str, ...]
    """Local free-mail domains, used beside the global ones."""
    tld: str
    cities: tuple[str, ...]
    eu: bool = False
    """Double opt-in is the norm for email marketing."""


COUNTRIES: tuple[Country, ...] = (
    Country("US", 34, (("America/New_York", 45), ("America/Chicago", 25),
                       ("America/Denver", 8), ("America/Los_Angeles", 22)), "en-US", "en",
            ("+12125", "+13124", "+14158", "+16173", "+12069", "+15124", "+13036",
             "+14046"), 6,
            ("aol.com", "comcast.net"), "com",
            ("New York", "Chicago", "San Francisco", "Boston", "Seattle", "Austin", "Denver")),
    Country("CA", 5, (("America/Toronto", 70), ("America/Vancouver", 30)), "en-CA", "en",
            ("+14163", "+16047", "+15148", "+16132"), 6, ("rogers.com",), "ca",
            ("Toronto", "Vancouver", "Montreal", "Ottawa")),
    Country("GB", 12, (("Europe/London", 1),), "en-GB", "en",
            ("+447400", "+447500", "+447800", "+447900"), 6,
            ("btinternet.com", "sky.com"), "co.uk",
            ("London", "Manchester", "Bristol", "Edinburgh", "Leeds")),
    Country("IE", 2, (("Europe/Dublin", 1),), "en-IE", "en", ("+35383", "+35387"), 7,
            ("eircom.net",), "ie", ("Dublin", "Cork", "Galway"), eu=True),
    Country("DE", 10, (("Europe/Berlin", 1),), "de-DE", "de",
            ("+49151", "+49160", "+49170", "+49176"), 8, ("gmx.de", "web.de", "t-online.de"),
            "de", ("Berlin", "Hamburg", "München", "Köln", "Frankfurt"), eu=True),
    Country("FR", 7, (("Europe/Paris", 1),), "fr-FR", "fr", ("+3361", "+3362", "+3365",
                                                              "+3367"), 7,
            ("orange.fr", "free.fr", "laposte.net"), "fr",
            ("Paris", "Lyon", "Marseille", "Toulouse", "Nantes"), eu=True),
    Country("ES", 4, (("Europe/Madrid", 1),), "es-ES", "es", ("+346",), 8,
            ("telefonica.net",), "es", ("Madrid", "Barcelona", "Valencia", "Sevilla"), eu=True),
    Country("NL", 4, (("Europe/Amsterdam", 1),), "nl-NL", "nl", ("+3161", "+3162", "+3164"), 7,
            ("ziggo.nl", "kpnmail.nl"), "nl", ("Amsterdam", "Rotterdam", "Utrecht"), eu=True),
    Country("SE", 2, (("Europe/Stockholm", 1),), "sv-SE", "sv", ("+4670", "+4673"), 7,
            ("telia.com",), "se", ("Stockholm", "Göteborg", "Malmö"), eu=True),
    Country("IT", 3, (("Europe/Rome", 1),), "it-IT", "it", ("+39333", "+39347", "+39348"), 7,
            ("libero.it", "virgilio.it"), "it", ("Milano", "Roma", "Torino", "Bologna"),
            eu=True),
    Country("BR", 4, (("America/Sao_Paulo", 1),), "pt-BR", "pt", ("+55119", "+55219"), 8,
            ("uol.com.br", "bol.com.br"), "com.br", ("São Paulo", "Rio de Janeiro", "Curitiba")),
    Country("IN", 6, (("Asia/Kolkata", 1),), "en-IN", "in", ("+9198", "+9199", "+9197"), 8,
            ("rediffmail.com",), "in", ("Bengaluru", "Mumbai", "Pune", "Hyderabad", "Delhi")),
    Country("AU", 4, (("Australia/Sydney", 65), ("Australia/Melbourne", 35)), "en-AU", "en",
            ("+61400", "+61412", "+61423", "+61438"), 6, ("bigpond.com",), "com.au",
            ("Sydney", "Melbourne", "Brisbane")),
    Country("JP", 2, (("Asia/Tokyo", 1),), "ja-JP", "ja", ("+81901", "+81903", "+81905"), 7,
            ("yahoo.co.jp",), "jp", ("Tokyo", "Osaka", "Fukuoka")),
    Country("SG", 1, (("Asia/Singapore", 1),), "en-SG", "en", ("+6581", "+6591"), 6,
            ("singnet.com.sg",), "sg", ("Singapore",)),
)

GLOBAL_FREEMAIL = ("gmail.com", "gmail.com", "gmail.com", "outlook.com", "yahoo.com",
                   "icloud.com", "hotmail.com", "proton.me")

FIRST_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("James", "Olivia", "Liam", "Emma", "Noah", "Ava", "Ethan", "Sophia", "Lucas", "Mia",
           "Mason", "Harper", "Logan", "Amelia", "Oliver", "Charlotte", "Jack", "Grace",
           "Henry", "Chloe", "Daniel", "Zoe", "Samuel", "Ella", "Aiden", "Nora", "Owen",
           "Priya", "Marcus", "Hannah"),
    "de": ("Lukas", "Anna", "Felix", "Lea", "Jonas", "Lena", "Leon", "Marie", "Paul", "Sophie",
           "Finn", "Laura", "Tim", "Julia", "Jan", "Katharina", "Moritz", "Johanna"),
    "fr": ("Louis", "Camille", "Hugo", "Léa", "Jules", "Manon", "Arthur", "Chloé", "Nathan",
           "Inès", "Théo", "Juliette", "Raphaël", "Sarah", "Mathis", "Clara"),
    "es": ("Hugo", "Lucía", "Martín", "Sofía", "Pablo", "María", "Alejandro", "Paula",
           "Daniel", "Carmen", "Javier", "Elena", "Diego", "Marta"),
    "nl": ("Daan", "Emma", "Sem", "Julia", "Lucas", "Tess", "Bram", "Sanne", "Thijs", "Fleur",
           "Ruben", "Lotte"),
    "sv": ("Erik", "Alice", "Oskar", "Maja", "Axel", "Elsa", "Viktor", "Ebba", "Nils", "Saga"),
    "it": ("Leonardo", "Giulia", "Francesco", "Sofia", "Alessandro", "Aurora", "Lorenzo",
           "Chiara", "Matteo", "Francesca", "Marco", "Elisa"),
    "pt": ("Miguel", "Helena", "Arthur", "Alice", "Gabriel", "Laura", "Rafael", "Beatriz",
           "Lucas", "Mariana", "Pedro", "Camila"),
    "in": ("Aarav", "Ananya", "Vihaan", "Diya", "Arjun", "Isha", "Rohan", "Kavya", "Aditya",
           "Meera", "Karan", "Neha", "Rahul", "Pooja", "Siddharth", "Nisha"),
    "ja": ("Haruto", "Yui", "Sota", "Hina", "Yuto", "Aoi", "Ren", "Sakura", "Kaito", "Mio"),
}

LAST_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson",
           "Anderson", "Taylor", "Thomas", "Moore", "Martin", "Thompson", "White", "Harris",
           "Clark", "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Scott", "Green",
           "Baker", "Adams", "Nelson", "Carter", "Mitchell", "Murphy", "Kelly", "Chen",
           "Patel", "Nguyen", "O'Brien"),
    "de": ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
           "Schulz", "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Neumann", "Braun"),
    "fr": ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
           "Leroy", "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "Fournier"),
    "es": ("García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez",
           "Pérez", "Gómez", "Martín", "Jiménez", "Ruiz", "Hernández", "Díaz"),
    "nl": ("de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen",
           "Visser", "Smit", "Meijer", "de Boer", "Mulder"),
    "sv": ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson",
           "Persson", "Svensson", "Gustafsson"),
    "it": ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci",
           "Marino", "Greco", "Bruno", "Gallo"),
    "pt": ("Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira",
           "Lima", "Gomes", "Costa", "Ribeiro"),
    "in": ("Sharma", "Verma", "Gupta", "Iyer", "Reddy", "Nair", "Patel", "Mehta", "Kapoor",
           "Rao", "Joshi", "Singh", "Kumar", "Desai"),
    "ja": ("Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura",
           "Kobayashi", "Kato"),
}

INDUSTRIES = ("software", "ecommerce", "financial_services", "healthcare", "education",
              "media", "manufacturing", "professional_services", "nonprofit", "travel")
INDUSTRY_WEIGHTS = (24, 14, 8, 7, 8, 9, 6, 14, 5, 5)

COMPANY_WORDS = (
    "Amber", "Beacon", "Birch", "Bluefin", "Brightwave", "Cedar", "Cinder", "Clearpath",
    "Cobalt", "Copperleaf", "Crestline", "Driftwood", "Ember", "Evergreen", "Fable", "Fernhill",
    "Fjord", "Foxglove", "Granite", "Harbor", "Hazel", "Helix", "Highland", "Indigo",
    "Ironbark", "Juniper", "Kestrel", "Lantern", "Larkspur", "Lumen", "Maple", "Meridian",
    "Mosaic", "Nimbus", "Oakridge", "Onyx", "Orchard", "Pinnacle", "Prairie", "Quarry",
    "Redwood", "Ridgeway", "Saffron", "Sable", "Sequoia", "Silverline", "Solstice", "Sparrow",
    "Summit", "Tandem", "Thistle", "Tidewater", "Timber", "Topaz", "Trellis", "Vantage",
    "Velvet", "Verdant", "Vista", "Willow", "Wren", "Zephyr", "Alder", "Basalt", "Canyon",
    "Delta", "Echo", "Falcon", "Glacier", "Horizon", "Iris", "Jasper", "Keystone", "Lumina",
)
SYLLABLES = ("vel", "tri", "qua", "zen", "lo", "mi", "ra", "no", "ka", "dex", "vo", "lu", "sy",
             "ne", "ta", "ri", "on", "ix", "ar", "io", "bri", "sol", "fen", "mar", "tor")
INDUSTRY_SUFFIXES: dict[str, tuple[str, ...]] = {
    "software": ("Labs", "Software", "Cloud", "Systems", "Data", "AI", "Digital"),
    "ecommerce": ("Goods", "Supply Co", "Outfitters", "Market", "Shop", "Home"),
    "financial_services": ("Capital", "Finance", "Pay", "Ledger", "Advisors"),
    "healthcare": ("Health", "Care", "Clinics", "Medical", "Wellness"),
    "education": ("Learning", "Academy", "Schools", "Tutors"),
    "media": ("Media", "Studios", "Press", "Creative"),
    "manufacturing": ("Industries", "Manufacturing", "Robotics", "Components", "Works"),
    "professional_services": ("Consulting", "Partners", "Group", "Agency", "Legal"),
    "nonprofit": ("Foundation", "Trust", "Alliance", "Initiative"),
    "travel": ("Travel", "Journeys", "Hotels", "Trips", "Adventures"),
}

JOB_TITLES = ("Marketing Manager", "Head of Marketing", "Growth Lead", "Product Manager",
              "Project Manager", "Operations Manager", "Software Engineer", "Designer",
              "Customer Success Manager", "Sales Director", "Data Analyst", "Content Lead",
              "Engineering Manager", "Office Manager", "Consultant", "Account Executive",
              "Marketing Coordinator", "VP Operations", "CTO", "COO")
FOUNDER_TITLES = ("Founder", "Co-founder", "CEO", "Owner", "Managing Director")

INTERESTS = ("project planning", "automation", "reporting", "remote teams", "templates",
             "integrations", "time tracking", "client portals", "roadmaps", "agile")

LEAD_SOURCES = ("organic", "paid_search", "paid_social", "referral", "email", "direct",
                "partner")


@dataclass(frozen=True)
class Channel:
    """How a visitor arrives: UTM tags and referrer of their first page."""

    lead_source: str
    weight: int
    source: str | None
    medium: str | None
    campaigns: tuple[str, ...]
    referrers: tuple[str, ...]
    landings: tuple[str, ...]


CHANNELS: tuple[Channel, ...] = (
    Channel("organic", 30, None, None, (), ("https://www.google.com/", "https://www.bing.com/",
                                            "https://duckduckgo.com/"),
            ("/blog/", "/blog/", "/", "/features", "/templates")),
    Channel("paid_search", 16, "google", "cpc",
            ("brand-search", "competitor-kanban", "project-management-tools",
             "gantt-chart-software"), ("https://www.google.com/",), ("/", "/pricing",
                                                                     "/features")),
    Channel("paid_social", 11, "linkedin", "paid_social",
            ("q-launch-automations", "remote-teams-guide", "agency-webinar"),
            ("https://www.linkedin.com/",), ("/", "/features/automations", "/webinars")),
    Channel("paid_social", 5, "facebook", "paid_social", ("freelancer-templates",),
            ("https://www.facebook.com/",), ("/templates", "/")),
    Channel("referral", 10, None, None, (),
            ("https://news.ycombinator.com/", "https://www.reddit.com/", "https://www.g2.com/",
             "https://www.capterra.com/", "https://www.producthunt.com/"),
            ("/", "/pricing", "/blog/")),
    Channel("partner", 4, "partner", "referral", ("agency-partners", "integration-directory"),
            ("https://partners.example.net/",), ("/integrations", "/")),
    Channel("direct", 20, None, None, (), ("",), ("/", "/pricing", "/login")),
    Channel("email", 4, "newsletter", "email", ("monthly-digest", "webinar-invite"), ("",),
            ("/blog/", "/webinars")),
)

BLOG_POSTS = ("how-to-run-a-weekly-planning-meeting", "kanban-vs-scrum",
              "remote-team-rituals", "ten-automation-recipes", "writing-better-briefs",
              "client-onboarding-checklist", "okrs-without-the-pain", "gantt-charts-explained",
              "async-standups", "agency-resourcing-guide", "product-roadmap-templates",
              "retrospective-formats")
DOCS_PAGES = ("getting-started", "boards", "automations", "integrations/slack",
              "integrations/google-drive", "api", "permissions", "import-from-trello",
              "time-tracking", "reports", "sso", "billing")
SITE_PAGES = ("/", "/features", "/features/automations", "/features/docs", "/pricing",
              "/customers", "/templates", "/integrations", "/security", "/about", "/webinars",
              "/compare/kanban-tools", "/changelog")
PAGE_TITLES = {"/": "Quillstack – Plan, track and ship together", "/pricing": "Pricing",
               "/signup": "Create your account", "/features": "Features", "/login": "Log in",
               "/customers": "Customer stories", "/templates": "Templates",
               "/invite/accept": "Join your team", "/features/docs": "Features: Docs",
               "/features/automations": "Features: Automations",
               "/subscribe/confirm": "Subscription confirmed"}

FEATURES = ("Boards", "Boards", "Boards", "Docs", "Docs", "Comments", "Comments", "Timeline",
            "Automations", "Reports", "Time Tracking", "Templates", "Integrations",
            "Guest Access", "Export PDF", "Search")
PROJECT_TEMPLATES = ("blank", "blank", "sprint-planning", "content-calendar", "client-project",
                     "product-launch", "bug-tracker", "okrs")
SCREENS = ("Home", "Home", "Board", "Board", "Board", "Task Detail", "Task Detail",
           "Notifications", "Inbox", "Search", "Profile")

PLANS = ("free", "starter", "pro", "enterprise")
PRICE_PER_SEAT = {"starter": 10, "pro": 24, "enterprise": 45}
ADDONS = (("Template Pack: Agency", 29.0), ("Template Pack: Product", 19.0),
          ("Extra Storage 100 GB", 49.0), ("Onboarding Workshop", 299.0))

NEWSLETTER_SUBJECTS = (
    "5 board layouts our fastest teams use", "New: automations that write your standups",
    "How Fernhill Media cut status meetings in half", "The async standup playbook",
    "Templates for your Q-planning week", "What's new in Quillstack this month",
    "Timeline view, now with dependencies", "Remote retros that people enjoy",
    "Your guide to client portals", "10 automation recipes to steal",
    "Kanban vs Scrum: the honest comparison", "Reports your CFO will actually read",
    "Getting more out of Docs", "Seven small habits of well-run projects",
)
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
)
DEVICES = (("Apple", "iPhone15,2", "ios", "iOS", "17.4"),
           ("Apple", "iPhone14,5", "ios", "iOS", "17.3"),
           ("Google", "Pixel 8", "android", "Android", "14"),
           ("samsung", "SM-S911B", "android", "Android", "14"))

# Relative activity per local hour, 00-23: a working day with a lunch dip and an evening tail.
WORK_HOURS = (0.2, 0.1, 0.1, 0.1, 0.2, 0.4, 0.9, 1.8, 3.4, 4.6, 4.8, 4.3, 3.0, 3.7, 4.4, 4.2,
              3.5, 2.4, 1.6, 1.3, 1.1, 0.9, 0.6, 0.4)
# Browsing the website leans more into evenings.
BROWSE_HOURS = (0.4, 0.2, 0.1, 0.1, 0.2, 0.4, 0.8, 1.4, 2.2, 2.8, 3.0, 3.0, 2.8, 2.9, 3.0, 2.9,
                2.6, 2.3, 2.2, 2.4, 2.5, 2.1, 1.4, 0.8)
