//! A seeded generator of a tenant's contacts with injected duplicates and
//! their ground truth, for measuring duplicate detection
//! ([`crate::quality::duplicate_candidates`]): the quality test and the
//! benchmark load the same tenant.
//!
//! The people: first names from a list of 160 common English names; last
//! names one of 50 common English surnames for 1 person in 10, otherwise
//! made of four syllables (some 270,000 distinct ones). Two different
//! people may share a name. About 35 % use a free-mail address, the others
//! work for one of `contacts / 8` companies and use its domain. Local parts
//! follow one of several patterns (`jane.doe`, `jdoe`, `jane_doe`,
//! `janedoe`, `jane.doe42`, …); 7 in 10 have a US phone number, written in
//! one of six formats.
//!
//! A duplicate copies one original person and changes one or two of:
//! a typo in the first or last name, the casing of the names, the phone's
//! format, a nickname for the first name, first and last name swapped, the
//! email at another domain. Its email follows its (changed) names with the
//! original's pattern when it took a nickname; otherwise it keeps the
//! original's local part at another (free-mail) domain, or has a typo of
//! its own. 1 duplicate in 7 has lost its phone number.

use std::collections::HashSet;

use crate::{
    domain::{CompanyName, Email, NewContact, PersonName, Phone, caseless_key},
    quality::{DuplicateScan, fold},
};

/// SplitMix64: small, fast and seedable.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 1.0 < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const FIRST: &[&str] = &[
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "Christopher",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Donald",
    "Steven",
    "Paul",
    "Andrew",
    "Joshua",
    "Kenneth",
    "Kevin",
    "Brian",
    "George",
    "Timothy",
    "Ronald",
    "Edward",
    "Jason",
    "Jeffrey",
    "Ryan",
    "Jacob",
    "Gary",
    "Nicholas",
    "Eric",
    "Jonathan",
    "Stephen",
    "Larry",
    "Justin",
    "Scott",
    "Brandon",
    "Benjamin",
    "Samuel",
    "Gregory",
    "Alexander",
    "Patrick",
    "Frank",
    "Raymond",
    "Jack",
    "Dennis",
    "Jerry",
    "Tyler",
    "Aaron",
    "Henry",
    "Adam",
    "Douglas",
    "Nathan",
    "Peter",
    "Zachary",
    "Kyle",
    "Walter",
    "Harold",
    "Jeremy",
    "Ethan",
    "Carl",
    "Keith",
    "Roger",
    "Gerald",
    "Christian",
    "Terry",
    "Sean",
    "Arthur",
    "Austin",
    "Noah",
    "Lawrence",
    "Jesse",
    "Joe",
    "Bryan",
    "Billy",
    "Jordan",
    "Albert",
    "Dylan",
    "Bruce",
    "Willie",
    "Gabriel",
    "Alan",
    "Juan",
    "Logan",
    "Wayne",
    "Ralph",
    "Roy",
    "Eugene",
    "Randy",
    "Vincent",
    "Russell",
    "Louis",
    "Philip",
    "Bobby",
    "Johnny",
    "Bradley",
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Betty",
    "Margaret",
    "Sandra",
    "Ashley",
    "Kimberly",
    "Emily",
    "Donna",
    "Michelle",
    "Carol",
    "Amanda",
    "Dorothy",
    "Melissa",
    "Deborah",
    "Stephanie",
    "Rebecca",
    "Sharon",
    "Laura",
    "Cynthia",
    "Kathleen",
    "Amy",
    "Angela",
    "Shirley",
    "Anna",
    "Brenda",
    "Pamela",
    "Emma",
    "Nicole",
    "Helen",
    "Samantha",
    "Katherine",
    "Christine",
    "Debra",
    "Rachel",
    "Carolyn",
    "Janet",
    "Catherine",
    "Maria",
    "Heather",
    "Diane",
    "Ruth",
    "Julie",
    "Olivia",
    "Joyce",
    "Virginia",
    "Victoria",
    "Kelly",
    "Lauren",
    "Christina",
    "Joan",
    "Evelyn",
    "Judith",
    "Megan",
    "Andrea",
    "Cheryl",
    "Hannah",
    "Abigail",
    "Zoë",
    "Renée",
    "José",
    "Chloé",
];

const COMMON_LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "O'Brien",
];

const SYL_A: &[&str] = &[
    "Bran", "Cal", "Dor", "Ell", "Fair", "Gar", "Hol", "Ives", "Kel", "Lang", "Mar", "Nor", "Ost",
    "Pem", "Quin", "Ros", "Stan", "Thor", "Ul", "Ver", "Wes", "Yar", "Ash", "Bel", "Cor", "Dun",
    "Fen", "Glen", "Hart", "Kirk",
];
const SYL_B: &[&str] = &[
    "", "", "ber", "den", "ing", "ley", "mer", "ton", "ris", "var", "sel", "dal", "ack", "ov",
    "ell", "und", "gan", "pol", "rim", "tesh",
];
const SYL_C: &[&str] = &[
    "wood", "field", "well", "ford", "stone", "man", "son", "berg", "by", "croft", "dale", "ham",
    "hurst", "land", "more", "ridge", "shaw", "ton", "worth", "wick", "ski", "ez", "ini", "ard",
    "ault",
];
const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "yahoo.com",
    "yahoo.com",
    "outlook.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "aol.com",
];
const LEGAL: &[&str] = &[
    "Inc", "LLC", "Ltd", "GmbH", "Corp", "Group", "Labs", "Partners",
];

/// The nicknames of a full first name (from the table the scorer reads).
fn nicknames_of(first: &str) -> Vec<&'static str> {
    const PAIRS: &[(&str, &str)] = &[
        ("Robert", "Bob"),
        ("Robert", "Rob"),
        ("William", "Bill"),
        ("William", "Will"),
        ("Elizabeth", "Liz"),
        ("Elizabeth", "Beth"),
        ("James", "Jim"),
        ("Michael", "Mike"),
        ("David", "Dave"),
        ("Richard", "Rick"),
        ("Joseph", "Joe"),
        ("Thomas", "Tom"),
        ("Charles", "Charlie"),
        ("Christopher", "Chris"),
        ("Daniel", "Dan"),
        ("Matthew", "Matt"),
        ("Anthony", "Tony"),
        ("Donald", "Don"),
        ("Steven", "Steve"),
        ("Andrew", "Andy"),
        ("Joshua", "Josh"),
        ("Kenneth", "Ken"),
        ("Timothy", "Tim"),
        ("Ronald", "Ron"),
        ("Edward", "Ed"),
        ("Jeffrey", "Jeff"),
        ("Nicholas", "Nick"),
        ("Benjamin", "Ben"),
        ("Samuel", "Sam"),
        ("Gregory", "Greg"),
        ("Alexander", "Alex"),
        ("Raymond", "Ray"),
        ("Henry", "Hank"),
        ("Nathan", "Nate"),
        ("Peter", "Pete"),
        ("Zachary", "Zach"),
        ("Walter", "Walt"),
        ("Lawrence", "Larry"),
        ("Vincent", "Vince"),
        ("Philip", "Phil"),
        ("Jennifer", "Jen"),
        ("Jessica", "Jess"),
        ("Margaret", "Peggy"),
        ("Margaret", "Maggie"),
        ("Patricia", "Pat"),
        ("Susan", "Sue"),
        ("Sandra", "Sandy"),
        ("Amanda", "Mandy"),
        ("Deborah", "Debbie"),
        ("Rebecca", "Becky"),
        ("Cynthia", "Cindy"),
        ("Pamela", "Pam"),
        ("Katherine", "Kate"),
        ("Katherine", "Kathy"),
        ("Victoria", "Vicky"),
        ("Abigail", "Abby"),
    ];
    PAIRS
        .iter()
        .filter(|(full, _)| *full == first)
        .map(|(_, nick)| *nick)
        .collect()
}

/// One person as generated, before validation.
#[derive(Debug, Clone)]
struct Person {
    first: String,
    last: String,
    pattern: usize,
    digits: Option<u32>,
    domain: String,
    company: Option<String>,
    phone: Option<(u16, u16, u16)>,
    phone_format: usize,
}

/// The local part of `first` and `last` under pattern `pattern`.
fn local_part(first: &str, last: &str, pattern: usize, digits: Option<u32>) -> String {
    let (f, l) = (fold(first), fold(last));
    let f1: String = f.chars().take(1).collect();
    let l1: String = l.chars().take(1).collect();
    let base = match pattern {
        0 => format!("{f}.{l}"),
        1 => format!("{f1}{l}"),
        2 => format!("{f}_{l}"),
        3 => format!("{f}{l}"),
        4 => format!("{f1}.{l}"),
        _ => format!("{f}{l1}"),
    };
    match digits {
        Some(d) => format!("{base}{d}"),
        None => base,
    }
}

fn phone_text((area, exchange, line): (u16, u16, u16), format: usize) -> String {
    match format {
        0 => format!("({area}) {exchange}-{line:04}"),
        1 => format!("{area}-{exchange}-{line:04}"),
        2 => format!("{area}.{exchange}.{line:04}"),
        3 => format!("+1 {area} {exchange} {line:04}"),
        4 => format!("{area}{exchange}{line:04}"),
        _ => format!("+1{area}{exchange}{line:04}"),
    }
}

/// A single-character typo in `word` (of at least 4 characters): two
/// neighbours swapped, one left out, one replaced or one doubled.
fn typo(rng: &mut Rng, word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() < 4 {
        return word.to_string();
    }
    // Never the first letter (people rarely mistype it), and only between
    // letters or digits, so that an address stays an address.
    let mut i = 1 + rng.below(chars.len() - 2);
    for _ in 0..8 {
        if chars[i].is_alphanumeric() && chars[i + 1].is_alphanumeric() {
            break;
        }
        i = 1 + rng.below(chars.len() - 2);
    }
    if !(chars[i].is_alphanumeric() && chars[i + 1].is_alphanumeric()) {
        return format!("{word}x");
    }
    match rng.below(4) {
        0 => chars.swap(i, i + 1),
        1 => {
            chars.remove(i);
        }
        2 => chars[i] = char::from(b'a' + rng.below(26) as u8),
        _ => chars.insert(i, chars[i]),
    }
    chars.into_iter().collect()
}

/// A generated tenant: its contacts in load order, and which of them are
/// duplicates of which.
#[derive(Debug, Clone)]
pub struct DuplicateTenant {
    /// The seed it was generated from.
    pub seed: u64,
    /// Every contact, originals and duplicates mixed.
    pub contacts: Vec<NewContact>,
    /// The injected duplicates: (original's email, duplicate's email).
    pub duplicates: Vec<(Email, Email)>,
}

impl DuplicateTenant {
    /// Generates `contacts` contacts from `seed`, `duplicate_share` of them
    /// (0–0.5) duplicates of others.
    pub fn generate(seed: u64, contacts: usize, duplicate_share: f64) -> DuplicateTenant {
        Generator::new(seed, contacts).run(contacts, duplicate_share.clamp(0.0, 0.5))
    }

    /// The precision and recall of `scan` against the injected duplicates:
    /// the share of its pairs that are injected duplicates, and the share
    /// of the injected duplicates among its pairs.
    pub fn precision_recall(&self, scan: &DuplicateScan) -> (f64, f64) {
        let key = |a: &Email, b: &Email| {
            let (a, b) = (a.normalized().to_string(), b.normalized().to_string());
            if a <= b { (a, b) } else { (b, a) }
        };
        let truth: HashSet<(String, String)> =
            self.duplicates.iter().map(|(a, b)| key(a, b)).collect();
        let found: HashSet<(String, String)> = scan
            .pairs()
            .iter()
            .map(|p| key(&p.email_a, &p.email_b))
            .collect();
        let hits = found.intersection(&truth).count() as f64;
        let precision = if found.is_empty() {
            1.0
        } else {
            hits / found.len() as f64
        };
        let recall = if truth.is_empty() {
            1.0
        } else {
            hits / truth.len() as f64
        };
        (precision, recall)
    }
}

struct Generator {
    rng: Rng,
    seed: u64,
    companies: Vec<(String, String)>,
    emails: HashSet<String>,
}

impl Generator {
    fn new(seed: u64, contacts: usize) -> Generator {
        let mut rng = Rng(seed);
        let companies = (0..(contacts / 8).max(1))
            .map(|i| {
                let stem = format!("{}{}", rng.pick(SYL_A), rng.pick(SYL_C));
                let name = format!("{stem} {}", rng.pick(LEGAL));
                (name, format!("{}{i}.example", stem.to_lowercase()))
            })
            .collect();
        Generator {
            rng,
            seed,
            companies,
            emails: HashSet::new(),
        }
    }

    fn last_name(&mut self) -> String {
        if self.rng.chance(0.1) {
            self.rng.pick(COMMON_LAST).to_string()
        } else {
            format!(
                "{}{}{}{}",
                self.rng.pick(SYL_A),
                self.rng.pick(SYL_B),
                self.rng.pick(SYL_B),
                self.rng.pick(SYL_C)
            )
        }
    }

    fn person(&mut self) -> Person {
        let first = self.rng.pick(FIRST).to_string();
        let last = self.last_name();
        let (domain, company) = if self.rng.chance(0.35) {
            (self.rng.pick(FREE_MAIL).to_string(), None)
        } else {
            let (name, domain) = self.rng.pick(&self.companies).clone();
            (domain, Some(name))
        };
        let phone = self.rng.chance(0.7).then(|| {
            (
                200 + self.rng.below(800) as u16,
                200 + self.rng.below(800) as u16,
                self.rng.below(10_000) as u16,
            )
        });
        Person {
            first,
            last,
            pattern: self.rng.below(6),
            digits: self.rng.chance(0.15).then(|| self.rng.below(100) as u32),
            domain,
            company,
            phone,
            phone_format: self.rng.below(6),
        }
    }

    /// `local`@`domain`, made unique in the tenant with digits if taken.
    fn claim_email(&mut self, local: &str, domain: &str) -> String {
        let mut email = format!("{local}@{domain}");
        let mut n = 2;
        while !self.emails.insert(caseless_key(&email)) {
            email = format!("{local}{n}@{domain}");
            n += 1;
        }
        email
    }

    fn contact(p: &Person, email: &str) -> NewContact {
        let mut c = NewContact::new(
            Email::parse(email).expect("a generated email is valid"),
            PersonName::parse(&p.first).expect("a generated first name is valid"),
            PersonName::parse(&p.last).expect("a generated last name is valid"),
        );
        c.company = p
            .company
            .as_deref()
            .map(|n| CompanyName::parse(n).expect("a generated company name is valid"));
        c.phone = p
            .phone
            .map(|n| Phone::parse(&phone_text(n, p.phone_format)).expect("a generated phone"));
        c
    }

    /// A duplicate of `p`: one or two changes, and its own email.
    fn duplicate(&mut self, p: &Person, email: &str) -> (Person, String) {
        let mut d = p.clone();
        let mut other_domain = false;
        let mut nickname = false;
        let changes = 1 + self.rng.below(2);
        for _ in 0..changes {
            match self.rng.below(6) {
                0 => {
                    if self.rng.chance(0.5) {
                        d.first = typo(&mut self.rng, &d.first);
                    } else {
                        d.last = typo(&mut self.rng, &d.last);
                    }
                }
                1 => {
                    if self.rng.chance(0.5) {
                        d.first = d.first.to_uppercase();
                        d.last = d.last.to_uppercase();
                    } else {
                        d.first = d.first.to_lowercase();
                        d.last = d.last.to_lowercase();
                    }
                }
                2 => d.phone_format = (d.phone_format + 1 + self.rng.below(5)) % 6,
                3 => match nicknames_of(&d.first).as_slice() {
                    [] => d.first = typo(&mut self.rng, &d.first),
                    nicks => {
                        d.first = self.rng.pick(nicks).to_string();
                        nickname = true;
                    }
                },
                4 => std::mem::swap(&mut d.first, &mut d.last),
                _ => other_domain = true,
            }
        }
        if self.rng.chance(1.0 / 7.0) {
            d.phone = None;
        }
        let (local, _) = email.rsplit_once('@').unwrap_or((email, ""));
        // A nickname's address follows it (`bob.smith`); otherwise the
        // address is the original's at another domain, or mistyped.
        let follows = local_part(&d.first, &d.last, d.pattern, d.digits);
        let nickname = nickname && caseless_key(&follows) != caseless_key(local);
        let other_domain = other_domain || (!nickname && self.rng.chance(0.4));
        let local = if nickname {
            follows
        } else if other_domain {
            let free: Vec<&&str> = FREE_MAIL.iter().filter(|f| **f != p.domain).collect();
            d.domain = self.rng.pick(&free).to_string();
            local.to_string()
        } else {
            typo(&mut self.rng, local)
        };
        let email = self.claim_email(&local, &d.domain.clone());
        (d, email)
    }

    fn run(mut self, contacts: usize, share: f64) -> DuplicateTenant {
        let duplicates = (contacts as f64 * share).round() as usize;
        let originals = contacts - duplicates;
        let mut people = Vec::with_capacity(originals);
        let mut out = Vec::with_capacity(contacts);
        for _ in 0..originals {
            let p = self.person();
            let local = local_part(&p.first, &p.last, p.pattern, p.digits);
            let email = self.claim_email(&local, &p.domain.clone());
            out.push(Self::contact(&p, &email));
            people.push((p, email));
        }
        // Distinct originals, each duplicated once.
        let mut chosen = HashSet::new();
        let mut truth = Vec::with_capacity(duplicates);
        while truth.len() < duplicates && chosen.len() < originals {
            let i = self.rng.below(originals);
            if !chosen.insert(i) {
                continue;
            }
            let (p, email) = people[i].clone();
            let (d, dup_email) = self.duplicate(&p, &email);
            out.push(Self::contact(&d, &dup_email));
            truth.push((
                Email::parse(&email).expect("a generated email is valid"),
                Email::parse(&dup_email).expect("a generated email is valid"),
            ));
        }
        // Shuffled (Fisher–Yates), so that load order says nothing.
        for i in (1..out.len()).rev() {
            let j = self.rng.below(i + 1);
            out.swap(i, j);
        }
        DuplicateTenant {
            seed: self.seed,
            contacts: out,
            duplicates: truth,
        }
    }
}
