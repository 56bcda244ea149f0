//! `medallion source load`: a deterministic Northwind of any scale, written
//! into PostgreSQL with `COPY ... FROM STDIN` in one transaction.
//!
//! Same tables and column types as the real dump (smallint keys, real prices
//! and discounts, bytea pictures, varchar, date). Scale 1 gives the classic
//! sizes (830 orders, 91 customers, 77 products, 8 categories, 9 employees,
//! ≈2 150 lines); scale N multiplies customers, orders and lines. Order ids
//! stay `smallint` while they fit (scale ≤ 27) and widen to `integer` beyond,
//! since 830 000 orders cannot be numbered in 16 bits. The same scale and
//! seed always give the same rows.

use bytes::{BufMut, BytesMut};
use futures::SinkExt;
use indicatif::ProgressBar;
use tokio_postgres::Client;

use super::postgres::classify;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// What `load` wrote.
#[derive(Debug, Clone, Default)]
pub struct LoadSummary {
    pub tables: Vec<(String, u64)>,
}

const CATEGORIES: [(&str, &str); 8] = [
    ("Beverages", "Soft drinks, coffees, teas, beers, and ales"),
    ("Condiments", "Sweet and savory sauces, relishes, spreads, and seasonings"),
    ("Confections", "Desserts, candies, and sweet breads"),
    ("Dairy Products", "Cheeses"),
    ("Grains/Cereals", "Breads, crackers, pasta, and cereal"),
    ("Meat/Poultry", "Prepared meats"),
    ("Produce", "Dried fruit and bean curd"),
    ("Seafood", "Seaweed and fish"),
];

/// (country, cities) as Northwind customers are spread.
const GEOGRAPHY: [(&str, &[&str]); 21] = [
    ("Argentina", &["Buenos Aires"]),
    ("Austria", &["Graz", "Salzburg"]),
    ("Belgium", &["Bruxelles", "Charleroi"]),
    ("Brazil", &["Campinas", "Resende", "Rio de Janeiro", "Sao Paulo"]),
    ("Canada", &["Montréal", "Tsawassen", "Vancouver"]),
    ("Denmark", &["Århus", "København"]),
    ("Finland", &["Helsinki", "Oulu"]),
    ("France", &["Lille", "Lyon", "Marseille", "Nantes", "Paris", "Reims", "Strasbourg", "Toulouse"]),
    ("Germany", &["Aachen", "Berlin", "Brandenburg", "Frankfurt a.M.", "Köln", "Leipzig", "München", "Stuttgart"]),
    ("Ireland", &["Cork"]),
    ("Italy", &["Bergamo", "Reggio Emilia", "Torino"]),
    ("Mexico", &["México D.F."]),
    ("Norway", &["Stavern"]),
    ("Poland", &["Warszawa"]),
    ("Portugal", &["Lisboa"]),
    ("Spain", &["Barcelona", "Madrid", "Sevilla"]),
    ("Sweden", &["Bräcke", "Luleå"]),
    ("Switzerland", &["Bern", "Genève"]),
    ("UK", &["Colchester", "Cowes", "London"]),
    ("USA", &["Albuquerque", "Anchorage", "Boise", "Butte", "Elgin", "Eugene", "Kirkland", "Portland", "San Francisco", "Seattle", "Walla Walla"]),
    ("Venezuela", &["Barquisimeto", "Caracas", "I. de Margarita", "San Cristóbal"]),
];

const FIRST_ORDER_ID: u64 = 10_248;
/// 1996-07-04 and 1998-05-06 as days since 1970-01-01.
const FIRST_ORDER_DAY: i64 = 9_681;
const LAST_ORDER_DAY: i64 = 10_352;

/// The DDL of the six tables, as in the real dump; `order_key` is `smallint`
/// or `integer`.
fn ddl(order_key: &str) -> String {
    format!(
        "DROP TABLE IF EXISTS order_details, orders, products, customers, employees, categories CASCADE;
CREATE TABLE categories (category_id smallint NOT NULL, category_name character varying(15) NOT NULL, description text, picture bytea);
CREATE TABLE customers (customer_id character varying(5) NOT NULL, company_name character varying(40) NOT NULL, contact_name character varying(30), contact_title character varying(30), address character varying(60), city character varying(15), region character varying(15), postal_code character varying(10), country character varying(15), phone character varying(24), fax character varying(24));
CREATE TABLE employees (employee_id smallint NOT NULL, last_name character varying(20) NOT NULL, first_name character varying(10) NOT NULL, title character varying(30), title_of_courtesy character varying(25), birth_date date, hire_date date, address character varying(60), city character varying(15), region character varying(15), postal_code character varying(10), country character varying(15), home_phone character varying(24), extension character varying(4), photo bytea, notes text, reports_to smallint, photo_path character varying(255));
CREATE TABLE order_details (order_id {order_key} NOT NULL, product_id smallint NOT NULL, unit_price real NOT NULL, quantity smallint NOT NULL, discount real NOT NULL);
CREATE TABLE orders (order_id {order_key} NOT NULL, customer_id character varying(5), employee_id smallint, order_date date, required_date date, shipped_date date, ship_via smallint, freight real, ship_name character varying(40), ship_address character varying(60), ship_city character varying(15), ship_region character varying(15), ship_postal_code character varying(10), ship_country character varying(15));
CREATE TABLE products (product_id smallint NOT NULL, product_name character varying(40) NOT NULL, supplier_id smallint, category_id smallint, quantity_per_unit character varying(20), unit_price real, units_in_stock smallint, units_on_order smallint, reorder_level smallint, discontinued integer NOT NULL);"
    )
}

const PRIMARY_KEYS: &str = "
ALTER TABLE categories ADD CONSTRAINT pk_categories PRIMARY KEY (category_id);
ALTER TABLE customers ADD CONSTRAINT pk_customers PRIMARY KEY (customer_id);
ALTER TABLE employees ADD CONSTRAINT pk_employees PRIMARY KEY (employee_id);
ALTER TABLE orders ADD CONSTRAINT pk_orders PRIMARY KEY (order_id);
ALTER TABLE order_details ADD CONSTRAINT pk_order_details PRIMARY KEY (order_id, product_id);
ALTER TABLE products ADD CONSTRAINT pk_products PRIMARY KEY (product_id);";

/// The id of the customer number `index` (0-based): five letters.
fn customer_id(index: u64) -> String {
    let mut n = index;
    let mut id = [b'A'; 5];
    for slot in id.iter_mut().rev() {
        *slot = b'A' + (n % 26) as u8;
        n /= 26;
    }
    String::from_utf8(id.to_vec()).expect("ascii")
}

fn date_text(days_since_epoch: i64) -> String {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    (epoch + chrono::Duration::days(days_since_epoch)).format("%Y-%m-%d").to_string()
}

/// Generates and loads Northwind at `scale` in one transaction.
pub async fn load(client: &mut Client, target: &str, scale: u32, progress: &ProgressBar) -> Result<LoadSummary> {
    if scale == 0 {
        return Err(Error::Config("--scale must be at least 1".into()));
    }
    let scale = scale as u64;
    let orders = 830 * scale;
    let order_key = if FIRST_ORDER_ID + orders <= i16::MAX as u64 { "smallint" } else { "integer" };
    let fail = |table: &str, e: tokio_postgres::Error| {
        let (reason, transient) = classify(&e);
        Error::SourceRead { target: target.to_string(), table: table.to_string(), reason, transient }
    };
    let tx = client.transaction().await.map_err(|e| fail("(transaction)", e))?;
    tx.batch_execute(&ddl(order_key)).await.map_err(|e| fail("(schema)", e))?;

    let mut rng = Rng::new(0x4E4F_5254_4857_494E ^ scale);
    let mut summary = LoadSummary::default();
    progress.set_length(orders);

    // categories
    let mut rows = Vec::new();
    for (i, (name, description)) in CATEGORIES.iter().enumerate() {
        rows.push(format!("{}\t{name}\t{description}\t\\\\x{:02x}{:02x}\n", i + 1, i, 0xff));
    }
    copy_rows(&tx, "categories", &rows).await.map_err(|e| fail("categories", e))?;
    summary.tables.push(("categories".into(), rows.len() as u64));

    // employees
    let names = [("Davis", "Nancy"), ("Fuller", "Andrew"), ("Leverling", "Janet"), ("Peacock", "Margaret"), ("Buchanan", "Steven"), ("Suyama", "Michael"), ("King", "Robert"), ("Callahan", "Laura"), ("Dodsworth", "Anne")];
    rows.clear();
    for (i, (last, first)) in names.iter().enumerate() {
        let id = i + 1;
        let boss = if id == 2 { "\\N".to_string() } else { "2".to_string() };
        rows.push(format!(
            "{id}\t{last}\t{first}\tSales Representative\tMs.\t{}\t{}\t{id} Main St.\tSeattle\tWA\t98122\tUSA\t(206) 555-{id:04}\t{id:04}\t\\\\x00{id:02x}\tEmployee {id}.\t{boss}\thttp://example.invalid/{id}.bmp\n",
            date_text(-5000 - 300 * id as i64),
            date_text(8000 + 40 * id as i64),
        ));
    }
    copy_rows(&tx, "employees", &rows).await.map_err(|e| fail("employees", e))?;
    summary.tables.push(("employees".into(), rows.len() as u64));

    // products
    let mut prices = Vec::new();
    rows.clear();
    for id in 1..=77u64 {
        let price = rng.range(250, 26_350) as f32 / 100.0;
        prices.push(price);
        let category = (id - 1) % 8 + 1;
        rows.push(format!(
            "{id}\tProduct {id:02}\t{}\t{category}\t{} boxes\t{price}\t{}\t{}\t{}\t{}\n",
            rng.range(1, 29),
            rng.range(1, 48),
            rng.range(0, 125),
            rng.range(0, 100),
            rng.range(0, 30),
            u64::from(rng.chance(10)),
        ));
    }
    copy_rows(&tx, "products", &rows).await.map_err(|e| fail("products", e))?;
    summary.tables.push(("products".into(), 77));

    // customers
    let customers = 91 * scale;
    let mut countries = Vec::with_capacity(customers as usize);
    rows.clear();
    for i in 0..customers {
        let (country, cities) = rng.pick(&GEOGRAPHY);
        let city = rng.pick(cities);
        countries.push(*country);
        let region = if *country == "USA" { "WA" } else { "\\N" };
        rows.push(format!(
            "{}\tCompany {i:06}\tContact {i}\tOwner\t{i} Market St.\t{city}\t{region}\t{:05}\t{country}\t555-{:04}\t\\N\n",
            customer_id(i),
            rng.range(1000, 99999),
            i % 10_000,
        ));
    }
    copy_rows(&tx, "customers", &rows).await.map_err(|e| fail("customers", e))?;
    summary.tables.push(("customers".into(), customers));

    // orders and order lines, streamed in chunks
    let mut order_rows = Vec::new();
    let mut line_rows = Vec::new();
    let mut lines = 0u64;
    let discounts = [0.0f32, 0.0, 0.0, 0.0, 0.05, 0.1, 0.15, 0.2, 0.25];
    for n in 0..orders {
        let order_id = FIRST_ORDER_ID + n;
        // Two customers in a hundred never order, as in the real data.
        let customer = rng.range(0, customers - 1 - customers / 50);
        let day = FIRST_ORDER_DAY + ((LAST_ORDER_DAY - FIRST_ORDER_DAY) * n as i64) / orders as i64;
        let shipped = if rng.chance(3) { "\\N".to_string() } else { date_text(day + rng.range(1, 30) as i64) };
        let country = countries[customer as usize];
        order_rows.push(format!(
            "{order_id}\t{}\t{}\t{}\t{}\t{shipped}\t{}\t{:.2}\tCompany {customer:06}\t{customer} Market St.\tCity\t\\N\t{:05}\t{country}\n",
            customer_id(customer),
            rng.range(1, 9),
            date_text(day),
            date_text(day + 28),
            rng.range(1, 3),
            rng.range(2, 100_000) as f64 / 100.0,
            rng.range(1000, 99999),
        ));
        let line_count = match rng.range(0, 9) {
            0 | 1 => 1,
            2..=4 => 2,
            5..=7 => 3,
            8 => 4,
            _ => 5,
        };
        let first_product = rng.range(1, 77);
        for k in 0..line_count {
            let product = (first_product + k * 13 - 1) % 77 + 1;
            line_rows.push(format!(
                "{order_id}\t{product}\t{}\t{}\t{}\n",
                prices[(product - 1) as usize],
                rng.range(1, 120),
                rng.pick(&discounts),
            ));
        }
        lines += line_count;
        if order_rows.len() >= 50_000 {
            copy_rows(&tx, "orders", &order_rows).await.map_err(|e| fail("orders", e))?;
            copy_rows(&tx, "order_details", &line_rows).await.map_err(|e| fail("order_details", e))?;
            progress.inc(order_rows.len() as u64);
            order_rows.clear();
            line_rows.clear();
        }
    }
    copy_rows(&tx, "orders", &order_rows).await.map_err(|e| fail("orders", e))?;
    copy_rows(&tx, "order_details", &line_rows).await.map_err(|e| fail("order_details", e))?;
    progress.inc(order_rows.len() as u64);
    summary.tables.push(("orders".into(), orders));
    summary.tables.push(("order_details".into(), lines));

    tx.batch_execute(PRIMARY_KEYS).await.map_err(|e| fail("(primary keys)", e))?;
    tx.commit().await.map_err(|e| fail("(commit)", e))?;
    client.batch_execute("ANALYZE").await.map_err(|e| fail("(analyze)", e))?;
    Ok(summary)
}

/// Loads a plain-SQL dump (CREATE TABLE + INSERT, like the real Northwind)
/// in one transaction.
pub async fn load_dump(client: &mut Client, target: &str, sql: &str) -> Result<()> {
    let fail = |e: tokio_postgres::Error| {
        let (reason, transient) = classify(&e);
        Error::SourceRead { target: target.to_string(), table: "(dump)".into(), reason, transient }
    };
    let tx = client.transaction().await.map_err(fail)?;
    tx.batch_execute(sql).await.map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    client.batch_execute("ANALYZE").await.map_err(fail)?;
    Ok(())
}

/// Sends text-format COPY rows.
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    rows: &[String],
) -> std::result::Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(&format!("COPY {table} FROM STDIN")).await?;
    futures::pin_mut!(sink);
    let mut buffer = BytesMut::with_capacity(1 << 20);
    for row in rows {
        buffer.put_slice(row.as_bytes());
        if buffer.len() >= 1 << 20 {
            sink.send(buffer.split().freeze()).await?;
        }
    }
    if !buffer.is_empty() {
        sink.send(buffer.split().freeze()).await?;
    }
    sink.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids_are_unique_five_letters() {
        assert_eq!(customer_id(0), "AAAAA");
        assert_eq!(customer_id(27), "AAABB");
        let ids: std::collections::HashSet<String> = (0..100_000).map(customer_id).collect();
        assert_eq!(ids.len(), 100_000);
    }

    #[test]
    fn order_dates_span_the_classic_range() {
        assert_eq!(date_text(FIRST_ORDER_DAY), "1996-07-04");
        assert_eq!(date_text(LAST_ORDER_DAY), "1998-05-06");
    }
}
