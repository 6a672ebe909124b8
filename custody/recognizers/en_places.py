"""English locations: street addresses, city/state/ZIP, and a gazetteer of countries, states and cities.

- **Street addresses**: a house number, one to four words and a street
  suffix (``12 Baker Street``, ``4418 N Main St.``), with a unit after it
  (``Apt. 5``, ``Suite 300``); ``P.O. Box 242``; 0.9 (above the NER model's
  0.85, whose address spans stop short).
- **City, state, ZIP**: ``Springfield, IL 62704``, ``Austin, TX``, and a
  Canadian province with its postal code (``Toronto, ON M4W 1A5``): 0.9.
- **Address cues**: ``lives at``, ``located at``, ``address is``, ``ship to``
  ... followed by text holding a number: the rest of the line, 0.65.
- **Venues and landmarks** (fifth round): capitalised words before a venue
  word (``Luna Lounge``, ``ASU Step Gallery``, ``Long Island Mac Arthur
  Airport``) or after ``Hotel``/``Mount``/``Lake``/``Fort`` (``Hotel
  Elegante``, ``Lake Tahoe``): 0.7; not a generic word alone before the venue
  word (``Photo Gallery``, ``Train Station``), not in lines where over three
  words in four are capitalised (headlines).
- **Gazetteer**: countries (ISO 3166-1 short names), US states, a few
  provinces and regions, and about 200 large cities, matched as capitalised
  words (and after ``#`` in hashtags): 0.7. Names that are also common words or first names (``Georgia``,
  ``Jordan``, ``Chad``, ``Turkey``, ``Nice``) need ``in``/``from``/``to``/``at``
  before them.

The lists are facts typed in here (country and state names are public
domain); see docs/desensitization.md.
"""

from __future__ import annotations

import re
from typing import Final

from custody.recognizers.base import Candidate, Recognizer, TextView

_SUFFIXES: Final = (
    "Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter"
    "|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Trail|Trl|Crescent|Cres|Close|Row|Plaza|Alley|Loop"
    "|Path|Pike|Run|Walk|Gardens|Grove|Hill|Heights|Park|Green|Mews|Rue|Strasse|Straße|Street|Via|Calle"
)
_UPPER = "A-ZÀ-ÖØ-ÞĀĂĄĆČĎĐĒĘĚĞĪŁŃŇŌŐŒŘŚŞŠŢŤŪŮŰŸŹŻŽ"
_WORD = (
    rf"(?:[{_UPPER}][^\W\d_]*(?:[.'’\-][^\W\d_]+)*\.?|\d{{1,5}}(?:st|nd|rd|th)?|[NSEW]\.?"
    r"|ul\.|al\.|de|do|da|dos|das|la|le|les|van|von|der|den|del|di|du|z|y|el)"
)
_UNIT = (
    r"(?:[ \t]*,?[ \t]*(?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|Room|Rm|Bldg|#)\.?[ \t]*#?[A-Za-z0-9\-]{1,6})"
)
# A compass point after the street word ("55 Bloor St W", Canadian and some US addresses; tenth round).
_COMPASS = r"(?:[ \t]+(?:NE|NW|SE|SW|N|S|E|W)\b\.?)"
_STREET = re.compile(
    rf"(?<![\w\-])\d{{1,6}}[A-Za-z]?[ \t]+(?:{_WORD}[ \t]+){{0,5}}(?:{_SUFFIXES})\b\.?{_COMPASS}?{_UNIT}?",
)
# Continental forms: a street word first ("Rua do Arenque 1634", "ul. Polna 5")
# or glued to the name ("Skoanveien 226", "Loorenstrasse 149"), then the number.
_STREET_FIRST = re.compile(
    rf"(?<![\w\-])(?:\d{{1,6}}[ \t]+)?(?:Rue|Rua|Via|Viale|Calle"
    rf"|Avenida|Av\.|Avenue|ul\.|Ulica|Piazza|Praça|Plac|Platz)"
    rf"[ \t]+(?:{_WORD}[ \t]+){{0,5}}\d{{1,5}}[A-Za-z]?\b{_UNIT}?"
)
# French forms, number first and the street word in lower case ("14 rue des Lilas", "3 avenue Foch",
# "12 bis boulevard Saint-Michel"; eleventh round, from a walk).
_STREET_FRENCH = re.compile(
    rf"(?<![\w\-])\d{{1,5}}(?:[ \t]?(?:bis|ter))?,?[ \t]+"
    rf"(?:rue|avenue|boulevard|bd|place|allée|chemin|impasse|quai|cours|route|calle|rua)[ \t]+"
    rf"(?:(?:de la|de l'|de|des|du|d'|la|le)[ \t]*)?{_WORD}(?:[ \t\-]+{_WORD}){{0,3}}"
)
_STREET_GLUED = re.compile(
    rf"(?<![\w\-])(?:\d{{1,6}}[ \t]+)?[{_UPPER}][^\W\d_]*"
    r"(?:vej|veien|vegen|gatan|gata|gade|straße|strasse|weg|laan|katu|kuja|tie|gasse|allee|straat|kade|väg|vägen"
    rf"|utca|ulice|iela|gatve|vägur|vegur)[ \t]+\d{{1,5}}[A-Za-z]?\b{_UNIT}?"
)
_PO_BOX = re.compile(r"\b(?:P\.? ?O\.?|Post Office)[ \t]*Box[ \t]+\d{1,6}\b", re.IGNORECASE)
_UNIT_ALONE = re.compile(r"\b(?:Apt|Apartment|Suite|Unit)\.?[ \t]*#?\d{1,5}[A-Za-z]?\b")
_US_STATES_ABBR: Final = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND"
    "|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC"
)
# A ZIP code is five digits (plus four), not the start of a longer number:
# "Alice Johnson, ID 110101199003078515" is an identifier, not Idaho.
_ZIP = r"\d{5}(?:-\d{4})?(?![\d\-])"
_CITY_STATE = re.compile(
    rf"\b[A-Z][A-Za-z.'\-]+(?:[ \t][A-Z][A-Za-z.'\-]+){{0,2}},[ \t]*(?:{_US_STATES_ABBR})"
    rf"(?:[ \t]+{_ZIP}|(?![ \t]*[\w\-]))"
)
_STATE_ZIP = re.compile(rf"\b(?:{_US_STATES_ABBR})[ \t]+{_ZIP}")
# A Canadian province and postal code ("ON M4W 1A5"), after a city or alone (tenth round).
_PROVINCE_POSTCODE = re.compile(
    r"\b(?:[A-Z][A-Za-z.'\-]+(?:[ \t][A-Z][A-Za-z.'\-]+){0,2},[ \t]*)?"
    r"(?:AB|BC|MB|NB|NL|NS|NT|NU|ON|PE|QC|SK|YT)[ \t]+[A-Z]\d[A-Z][ \t]?\d[A-Z]\d\b"
)
_CUE = re.compile(
    r"\b(?:lives? at|living at|located at|resides? at|residing at|address(?: is|:)|addressed to"
    r"|ship(?:ped)? to|deliver(?:ed)? to|send it to|moved to"
    r"|mail(?:ed)? to|based at|office(?:s)? (?:is|are) at)"
    r"[ \t:]+",
    re.IGNORECASE,
)
_CUE_TAIL = re.compile(r"[^\n.;!?]{4,80}")
# A time or a day after the cue is not an address ("the meeting moved to 3pm Thursday", "standup
# moved to 10:30"; eleventh round, from a walk).
_NOT_ADDRESS_TAIL = re.compile(
    r"\d{1,2}(?::\d{2}|[ \t]?(?:am|pm|a\.m|p\.m)\b)|(?:mon|tues|wednes|thurs|fri|satur|sun)day\b"
    r"|(?:today|tomorrow|tonight|noon|midnight|next|this|the next|the following)\b",
    re.IGNORECASE,
)

_COUNTRIES: Final = """
Afghanistan|Albania|Algeria|Andorra|Angola|Argentina|Armenia|Australia|Austria|Azerbaijan|Bahamas|Bahrain
|Bangladesh|Barbados|Belarus|Belgium|Belize|Benin|Bhutan|Bolivia|Bosnia and Herzegovina|Bosnia|Botswana|Brazil
|Brunei|Bulgaria|Burkina Faso|Burundi|Cambodia|Cameroon|Canada|Cape Verde|Central African Republic|Chile
|Colombia|Comoros|Congo|Costa Rica|Croatia|Cuba|Cyprus|Czech Republic|Czechia|Denmark|Djibouti|Dominica
|Dominican Republic|Ecuador|Egypt|El Salvador|Equatorial Guinea|Eritrea|Estonia|Eswatini|Ethiopia|Fiji
|Finland|France|Gabon|Gambia|Germany|Ghana|Greece|Greenland|Grenada|Guatemala|Guinea-Bissau|Guyana|Haiti|Honduras
|Hong Kong|Hungary|Iceland|Indonesia|Iran|Iraq|Ireland|Israel|Italy|Ivory Coast|Jamaica|Japan|Kazakhstan
|Kiribati|Kosovo|Kuwait|Kyrgyzstan|Laos|Latvia|Lebanon|Lesotho|Liberia|Libya|Liechtenstein|Lithuania
|Luxembourg|Macau|Madagascar|Malawi|Malaysia|Maldives|Mali|Malta|Marshall Islands|Mauritania|Mauritius|Mexico
|Micronesia|Moldova|Monaco|Mongolia|Montenegro|Morocco|Mozambique|Myanmar|Namibia|Nauru|Nepal|Netherlands
|New Zealand|Nicaragua|Niger|Nigeria|North Korea|North Macedonia|Norway|Oman|Pakistan|Palau|Palestine
|Panama|Papua New Guinea|Paraguay|Peru|Philippines|Poland|Portugal|Puerto Rico|Qatar|Romania|Russia|Rwanda
|Saint Lucia|Samoa|San Marino|Saudi Arabia|Senegal|Serbia|Seychelles|Sierra Leone|Singapore|Slovakia
|Slovenia|Solomon Islands|Somalia|South Africa|South Korea|South Sudan|Spain|Sri Lanka|Sudan|Suriname
|Sweden|Switzerland|Syria|Taiwan|Tajikistan|Tanzania|Thailand|Timor-Leste|Togo|Tonga|Trinidad and Tobago
|Tunisia|Turkmenistan|Tuvalu|Uganda|Ukraine|United Arab Emirates
|United Kingdom|United States|United States of America
|Uruguay|Uzbekistan|Vanuatu|Vatican City|Venezuela|Vietnam
|Yemen|Zambia|Zimbabwe|USA|U\\.S\\.A\\.|U\\.S\\.|UK|UAE
|England|Scotland|Wales|Northern Ireland|Britain|Great Britain|Europe|Africa|Asia|Antarctica|Oceania
|North America|South America|Latin America|Middle East|Caribbean|Scandinavia|Siberia|Korea
"""
_US_STATES: Final = """
Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Hawaii|Idaho|Illinois
|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota|Mississippi|Missouri
|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York|North Carolina|North Dakota|Ohio
|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina|South Dakota|Tennessee|Texas|Utah|Vermont
|West Virginia|Wisconsin|Wyoming|Ontario|Quebec|British Columbia|Alberta|Manitoba|Nova Scotia|Saskatchewan
|Queensland|New South Wales|Victoria|Tasmania|Bavaria|Catalonia|Andalusia|Tuscany|Sicily|Normandy|Provence
"""
_CITIES: Final = """
New York City|NYC|Los Angeles|LA|Chicago|Philadelphia|Philly|San Antonio|San Diego|San Jose
|San Francisco|Seattle|Denver|Boston|Detroit|Nashville|Memphis|Portland|Las Vegas|Vegas|Baltimore|Milwaukee
|Albuquerque|Tucson|Fresno|Sacramento|Atlanta|Miami|Orlando|Tampa|Oakland|Minneapolis|Cleveland|Pittsburgh
|Cincinnati|St\\. Louis|Saint Louis|Kansas City|New Orleans
|Honolulu|Anchorage|Salt Lake City|Raleigh|Charlotte
|Indianapolis|Columbus|Jacksonville|Fort Worth|El Paso|Oklahoma City|Louisville|Richmond|Buffalo|Brooklyn
|Manhattan|Queens|Bronx|Harlem|Hollywood|Beverly Hills|Silicon Valley
|Toronto|Montreal|Vancouver|Ottawa|Calgary
|Mexico City|Havana|Rio de Janeiro|Sao Paulo|São Paulo|Buenos Aires|Lima|Bogota|Bogotá|Santiago|Caracas
|London|Manchester|Liverpool|Birmingham|Leeds|Glasgow|Edinburgh|Dublin|Belfast|Cardiff|Bristol|Oxford|Cambridge
|Paris|Marseille|Lyon|Berlin|Munich|Hamburg|Frankfurt|Cologne|Vienna|Zurich|Geneva|Amsterdam|Rotterdam
|Brussels|Copenhagen|Stockholm|Oslo|Helsinki|Reykjavik|Madrid|Barcelona|Lisbon|Rome|Milan|Naples|Venice
|Florence|Athens|Istanbul|Ankara|Warsaw|Krakow|Prague|Budapest|Bucharest|Sofia|Belgrade|Zagreb|Kyiv|Kiev
|Moscow|St\\. Petersburg|Cairo|Lagos|Nairobi|Johannesburg
|Cape Town|Casablanca|Accra|Addis Ababa|Dubai|Abu Dhabi
|Doha|Riyadh|Tehran|Baghdad|Jerusalem|Tel Aviv|Beirut|Karachi|Lahore|Islamabad|Mumbai|Delhi|New Delhi
|Bangalore|Bengaluru|Kolkata|Chennai|Hyderabad|Dhaka|Kathmandu|Colombo|Bangkok|Hanoi|Ho Chi Minh City|Manila
|Jakarta|Kuala Lumpur|Beijing|Shanghai|Guangzhou|Shenzhen|Wuhan|Chengdu|Hangzhou|Tokyo|Osaka|Kyoto|Seoul
|Busan|Taipei|Sydney|Melbourne|Brisbane|Perth|Adelaide|Auckland|Wellington|Christchurch|Pesawar|Peshawar
"""
# Gazetteer names that are common words, first names or brands: only after a preposition.
_AMBIGUOUS_PLACES: Final = frozenset(
    {
        "Georgia",
        "Jordan",
        "Chad",
        "Turkey",
        "Niger",
        "Guinea",
        "Victoria",
        "Nice",
        "Mali",
        "China",
        "India",
        "Charlotte",
        "Richmond",
        "Columbus",
        "Santiago",
        "Lima",
        "Sofia",
        "Phoenix",
        "Austin",
        "Dallas",
        "Houston",
        "Madison",
        "Cambridge",
        "Oxford",
        "LA",
        "UK",
        "Korea",
        "Perth",
        "Reading",
        "Bath",
        "Wales",
        "Queens",
        "Hollywood",
    }
)
_PLACES: Final = "|".join(
    sorted(
        {p.strip() for block in (_COUNTRIES, _US_STATES, _CITIES) for p in block.replace("\n", "").split("|")}
        | {"China", "India", "Georgia", "Jordan", "Chad", "Turkey", "Austin", "Dallas", "Houston", "Phoenix"},
        key=len,
        reverse=True,
    )
)
_GAZETTEER = re.compile(rf"(?<![A-Za-z0-9_@])#?(?:{_PLACES})(?![A-Za-z0-9_])")
_PREPOSITION = re.compile(r"\b(?:in|from|to|at|near|visit|visiting|of)[ \t]+$", re.IGNORECASE)


_VENUE_WORDS: Final = (
    "Airport|Stadium|Arena|Theatre|Theater|Hotel|Lounge|Gallery|Aquarium|Zoo|Mall|Cathedral|Casino"
    "|Ballroom|Auditorium|Coliseum|Amphitheatre|Amphitheater|Pavilion|Speedway|Racecourse|Ballpark"
)
_NAME_WORD = r"[A-Z][A-Za-z'’\-]*"
_VENUE_TAIL = re.compile(rf"(?<![\w@#])({_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,3}})[ \t]+(?:{_VENUE_WORDS})\b")
_VENUE_HEAD = re.compile(rf"(?<![\w@#])(?:Hotel|Mount|Lake|Fort)[ \t]+{_NAME_WORD}")
_ANY_VENUE_WORD = re.compile(rf"(?:{_VENUE_WORDS}|Hotel|Mount|Lake|Fort)\b")
# Words that make a venue generic when they are all that precedes the venue word.
_GENERIC_WORDS: Final = (
    "the a an my our your his her their this that photo art train bus main big best great old local "
    "shopping city national international regional new top free live open private public grand "
    "hotel airport at in to from on for of and with by"
)
_GENERIC_BEFORE_VENUE: Final = frozenset(_GENERIC_WORDS.split())


def _headline(text: str, start: int) -> bool:
    """Whether the line around ``start`` has four words or more, over three in four capitalised."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", start)
    words = [w for w in text[line_start : None if line_end < 0 else line_end].split() if w[:1].isalpha()]
    return len(words) >= 4 and 4 * sum(w[0].isupper() for w in words) > 3 * len(words)


def _venues(text: str, name: str) -> list[Candidate]:
    found: list[Candidate] = []
    if _ANY_VENUE_WORD.search(text) is None:  # most records: one cheap scan
        return found
    for m in _VENUE_TAIL.finditer(text):
        words = m.group(1).split()
        while words and words[0].lower() in _GENERIC_BEFORE_VENUE:
            words = words[1:]
        if not words or all(w.lower() in _GENERIC_BEFORE_VENUE for w in words):
            continue
        start = _start_of(text, m, words)
        if not _headline(text, start):
            found.append(Candidate(start, m.end(), "LOCATION", 0.7, name))
    for m in _VENUE_HEAD.finditer(text):
        if not _headline(text, m.start()):
            found.append(Candidate(m.start(), m.end(), "LOCATION", 0.7, name))
    return found


def _start_of(text: str, m: re.Match[str], words: list[str]) -> int:
    """Where the kept words of a venue match begin (leading generic words dropped)."""
    return text.index(words[0], m.start(1))


class AddressRecognizer(Recognizer):
    """Street addresses, P.O. boxes, units, city/state/ZIP, and addresses after a cue."""

    name = "AddressRecognizer"
    entities = ("LOCATION",)
    languages = frozenset({"en"})

    def applies(self, view: TextView) -> bool:
        return view.english and (view.has_digit or "," in view.text)

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found = [
            Candidate(m.start(), m.end(), "LOCATION", 0.9, self.name)
            for pattern in (
                _STREET,
                _STREET_FIRST,
                _STREET_FRENCH,
                _STREET_GLUED,
                _PO_BOX,
                _CITY_STATE,
                _STATE_ZIP,
                _PROVINCE_POSTCODE,
                _UNIT_ALONE,
            )
            for m in pattern.finditer(text)
        ]
        for m in _CUE.finditer(text):
            tail = _CUE_TAIL.match(text, m.end())
            if tail and any(c.isdigit() for c in tail.group()) and not _NOT_ADDRESS_TAIL.match(tail.group()):
                end = tail.end()
                while end > tail.start() and text[end - 1] in " ,":
                    end -= 1
                # An address that starts with a street the patterns know runs on to the end of the line.
                starts_known = any(c.start == tail.start() and c.end <= end for c in found)
                found.append(
                    Candidate(tail.start(), end, "LOCATION", 0.9 if starts_known else 0.65, self.name)
                )
        return found


class PlaceGazetteerRecognizer(Recognizer):
    """Countries, US states and large cities, by name (hashtags included)."""

    name = "PlaceGazetteerRecognizer"
    entities = ("LOCATION",)
    languages = frozenset({"en"})

    def applies(self, view: TextView) -> bool:
        return view.english

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found = []
        for m in _GAZETTEER.finditer(text):
            name = m.group().lstrip("#")
            if name in _AMBIGUOUS_PLACES and not _PREPOSITION.search(text, max(0, m.start() - 12), m.start()):
                continue
            found.append(Candidate(m.start(), m.end(), "LOCATION", 0.7, self.name))
        found.extend(_venues(text, self.name))
        return found
