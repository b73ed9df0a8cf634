//! A list that keeps its first item inline. A request nearly always makes one attempt and its
//! answer names one finish reason: a `Vec` for that one item was an allocation on the serving
//! thread, freed on the exporter's.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMore<T> {
    first: Option<T>,
    more: Vec<T>,
}

impl<T> Default for OneOrMore<T> {
    fn default() -> Self {
        Self {
            first: None,
            more: Vec::new(),
        }
    }
}

impl<T> OneOrMore<T> {
    pub fn push(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.more.push(item);
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(&self.more)
    }
}

impl<T> FromIterator<T> for OneOrMore<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut list = Self::default();
        for item in items {
            list.push(item);
        }
        list
    }
}

impl<T> From<Vec<T>> for OneOrMore<T> {
    fn from(items: Vec<T>) -> Self {
        items.into_iter().collect()
    }
}

impl<T: PartialEq<U>, U, const N: usize> PartialEq<[U; N]> for OneOrMore<T> {
    fn eq(&self, other: &[U; N]) -> bool {
        self.len() == N && self.iter().zip(other).all(|(mine, theirs)| mine == theirs)
    }
}

#[cfg(test)]
mod tests {
    use super::OneOrMore;

    #[test]
    fn items_come_back_in_the_order_pushed() {
        for n in 0..4 {
            let list: OneOrMore<usize> = (0..n).collect();
            assert_eq!(list.len(), n);
            assert_eq!(list.is_empty(), n == 0);
            assert_eq!(
                list.iter().copied().collect::<Vec<_>>(),
                (0..n).collect::<Vec<_>>()
            );
        }
    }
}
